use super::*;

#[test]
fn this_machine_runs_commands_as_their_user_in_namespaces_under_landlock() {
    // As the tests run (root, a recent kernel, the user made by scripts/services.sh).
    let sandbox = Sandbox::new(CommandSettings::default());
    let described = sandbox.describe();
    assert!(described.starts_with("user brain-cmd (uid "), "{described}");
    assert!(described.contains("namespaces: pid, mount, ipc, uts, network"), "{described}");
    assert!(sandbox.landlock_abi >= 1, "{described}");
    assert!(sandbox.isolates_processes());
    let granted = Sandbox::new(CommandSettings { network: true, ..CommandSettings::default() });
    assert!(granted.describe().contains("(network granted)"));
}

#[test]
fn the_plan_binds_a_root_under_a_private_folder_back_in_place() {
    let sandbox = Sandbox::new(CommandSettings::default());
    let plan = sandbox.plan(Path::new("/tmp/a/b"), None).unwrap();
    let rebind: Vec<&str> = plan.rebind.iter().map(|p| p.to_str().unwrap()).collect();
    assert_eq!(rebind, ["/tmp/a", "/tmp/a/b"]);
    assert_eq!(sandbox.plan(Path::new("/tmp"), None).unwrap().rebind, [c"/tmp".to_owned()]);
    assert!(sandbox.plan(Path::new("/srv/work"), None).unwrap().rebind.is_empty());
    assert!(
        sandbox.without_namespaces().plan(Path::new("/tmp/a"), None).unwrap().rebind.is_empty()
    );
    let hidden = |network| {
        let settings = CommandSettings { network, ..CommandSettings::default() };
        Sandbox::new(settings).plan(Path::new("/srv"), None).unwrap().hidden.len()
    };
    assert_eq!((hidden(false), hidden(true)), (1, 0), "/run is hidden without the network only");
}

#[test]
fn limits_are_never_asked_above_those_in_force() {
    let sandbox = Sandbox::new(CommandSettings { processes: 65_536, ..CommandSettings::default() });
    let plan = sandbox.plan(Path::new("/srv"), None).unwrap();
    for (resource, soft, hard) in plan.limits {
        assert!(soft <= hard && hard <= current_hard_limit(resource), "{resource}: {soft} {hard}");
    }
}
