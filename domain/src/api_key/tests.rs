//! The key aggregate as given/when/then over its events.

use super::*;

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn grant(role: Option<Role>) -> KeyGrant {
    KeyGrant {
        name: "ci".into(),
        owner: "team-a".into(),
        role,
        permissions: BTreeSet::new(),
        kinds: Vec::new(),
        expires_at_ms: None,
        limits: KeyLimits::default(),
    }
}

fn created(grant: KeyGrant) -> ApiKeyEvent {
    ApiKeyEvent::ApiKeyCreated { grant: Box::new(grant), secret_hash: HASH_A.into(), at_ms: 1_000 }
}

/// Given these past events, when this command is decided, then expect exactly this.
fn check(given: &[ApiKeyEvent], when: ApiKeyCommand, then: Result<Vec<ApiKeyEvent>, ApiKeyError>) {
    assert_eq!(ApiKey::fold(given).decide(when), then);
}

#[test]
fn creating_a_key_records_its_grant_and_the_hash_of_its_secret() {
    let when = ApiKeyCommand::Create {
        grant: Box::new(grant(Some(Role::Developer))),
        secret_hash: HASH_A.into(),
        now_ms: 1_000,
    };
    check(&[], when, Ok(vec![created(grant(Some(Role::Developer)))]));
}

#[test]
fn a_key_is_created_once() {
    let when = ApiKeyCommand::Create {
        grant: Box::new(grant(Some(Role::Viewer))),
        secret_hash: HASH_B.into(),
        now_ms: 2,
    };
    check(&[created(grant(Some(Role::Viewer)))], when, Err(ApiKeyError::AlreadyExists));
}

#[test]
fn a_key_without_role_or_permission_or_with_a_bad_field_is_refused_naming_the_field() {
    let create = |grant: KeyGrant, hash: &str| ApiKeyCommand::Create {
        grant: Box::new(grant),
        secret_hash: hash.into(),
        now_ms: 1_000,
    };
    let field = |result: Result<Vec<ApiKeyEvent>, ApiKeyError>| match result {
        Err(ApiKeyError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let key = ApiKey::default();
    assert_eq!(field(key.decide(create(grant(None), HASH_A))), "role");
    assert_eq!(field(key.decide(create(grant(Some(Role::Admin)), "secret"))), "secret_hash");
    let blank = KeyGrant { name: " ".into(), ..grant(Some(Role::Admin)) };
    assert_eq!(field(key.decide(create(blank, HASH_A))), "name");
    let past = KeyGrant { expires_at_ms: Some(999), ..grant(Some(Role::Admin)) };
    assert_eq!(field(key.decide(create(past, HASH_A))), "expires_at");
    let kinds = KeyGrant { kinds: vec!["Bad Kind".into()], ..grant(Some(Role::Agent)) };
    assert_eq!(field(key.decide(create(kinds, HASH_A))), "kinds");
    let limits = KeyLimits { requests_per_minute: Some(0), ..KeyLimits::default() };
    let never = KeyGrant { limits, ..grant(Some(Role::Developer)) };
    assert_eq!(field(key.decide(create(never, HASH_A))), "limits.requests_per_minute");
}

#[test]
fn a_rotated_key_accepts_its_old_secret_only_until_the_grace_time() {
    let given = [created(grant(Some(Role::Viewer)))];
    let when = ApiKeyCommand::Rotate { secret_hash: HASH_B.into(), grace_ms: 100, now_ms: 5_000 };
    let rotated = ApiKeyEvent::ApiKeyRotated {
        secret_hash: HASH_B.into(),
        previous_valid_until_ms: 5_100,
        at_ms: 5_000,
    };
    check(&given, when, Ok(vec![rotated.clone()]));
    let key = ApiKey::fold(&[given[0].clone(), rotated]);
    assert_eq!(key.accepts_hash(5_050).collect::<Vec<_>>(), [HASH_B, HASH_A]);
    assert_eq!(key.accepts_hash(5_100).collect::<Vec<_>>(), [HASH_B]);
}

#[test]
fn a_rotation_grace_longer_than_seven_days_is_refused() {
    let when = ApiKeyCommand::Rotate {
        secret_hash: HASH_B.into(),
        grace_ms: ROTATION_GRACE_MS_MAX + 1,
        now_ms: 5_000,
    };
    let refused = ApiKey::fold(&[created(grant(Some(Role::Viewer)))]).decide(when);
    assert!(matches!(refused, Err(ApiKeyError::Invalid { field: "grace_h", .. })), "{refused:?}");
}

#[test]
fn a_revoked_key_accepts_no_secret_and_cannot_be_rotated_or_revoked_again() {
    let revoked = ApiKeyEvent::ApiKeyRevoked { reason: "leaked".into(), at_ms: 2_000 };
    let given = [created(grant(Some(Role::Admin))), revoked];
    assert_eq!(ApiKey::fold(&given).accepts_hash(2_001).count(), 0);
    let rotate = ApiKeyCommand::Rotate { secret_hash: HASH_B.into(), grace_ms: 0, now_ms: 3_000 };
    check(&given, rotate, Err(ApiKeyError::Revoked));
    let revoke = ApiKeyCommand::Revoke { reason: "again".into(), now_ms: 3_000 };
    check(&given, revoke, Err(ApiKeyError::Revoked));
}

#[test]
fn an_expired_key_accepts_no_secret_and_cannot_be_rotated() {
    let expiring = KeyGrant { expires_at_ms: Some(10_000), ..grant(Some(Role::Viewer)) };
    let given = [created(expiring)];
    let key = ApiKey::fold(&given);
    assert_eq!(key.accepts_hash(9_999).count(), 1);
    assert_eq!(key.accepts_hash(10_000).count(), 0);
    let rotate = ApiKeyCommand::Rotate { secret_hash: HASH_B.into(), grace_ms: 0, now_ms: 10_000 };
    check(&given, rotate, Err(ApiKeyError::Expired));
}

#[test]
fn roles_nest_as_documented_and_an_agent_key_can_only_act_as_an_agent() {
    let viewer = Role::Viewer.permissions();
    for role in [Role::Operator, Role::Developer, Role::Admin] {
        assert!(viewer.is_subset(&role.permissions()), "{role:?} reads what a viewer reads");
    }
    assert!(!viewer.contains(&Permission::MissionsWrite));
    assert!(Role::Developer.permissions().contains(&Permission::LlmCall));
    assert!(!Role::Operator.permissions().contains(&Permission::LlmConfig));
    assert!(!Role::Developer.permissions().contains(&Permission::KeysManage));
    assert_eq!(Role::Agent.permissions(), BTreeSet::from([Permission::AgentsSelf]));
    assert_eq!(Role::Admin.permissions().len(), Permission::ALL.len());
    let custom = KeyGrant {
        permissions: BTreeSet::from([Permission::Metrics]),
        ..grant(Some(Role::Viewer))
    };
    assert!(custom.effective().contains(&Permission::Metrics));
}

#[test]
fn permission_and_role_names_round_trip_through_json() {
    for permission in Permission::ALL {
        let json = serde_json::to_value(permission).unwrap();
        assert_eq!(json, permission.as_str());
        assert_eq!(Permission::parse(permission.as_str()), Some(permission));
    }
    for role in Role::ALL {
        assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
}
