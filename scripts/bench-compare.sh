#!/usr/bin/env bash
# Compares two commits on this machine: builds each in a temporary git worktree, then runs
#   brain bench missions --own-serve --serve-binary <build> --json   (the mission pipeline)
#   <build> bench append                                              (the log: committer, relay)
# for A and B in pairs, alternating which goes first (A B, B A, ...) so that a machine that
# warms up or slows down over the run does not favour one side. Pair 1 is reported but counted
# as warm-up. For every figure of the benches' JSON lines it prints the B/A ratio of each pair,
# their median and their spread (min-max) over the counted pairs.
#
# usage: scripts/bench-compare.sh [options] A B        (A, B: anything git rev-parse takes)
#   --pairs N              pairs of runs (4)
#   --profile P            cargo profile to build (release; dev builds faster, measures worse)
#   --missions-args "..."  extra flags of `brain bench missions`
#                          ("--missions 5000 --rate 400 --round-trips")
#   --append-args "..."    flags of `brain bench append` ("--commands 20000")
#   --skip-append          run only the missions bench
# Needs the services (scripts/services.sh) and jq. Builds share CARGO_TARGET_DIR (or the
# repository's target/), so dependencies compile once. The worktrees go away on exit.
set -euo pipefail

pairs=4
profile=release
missions_args="--missions 5000 --rate 400 --round-trips"
append_args="--commands 20000"
skip_append=false
positional=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --pairs) pairs=$2; shift 2 ;;
        --profile) profile=$2; shift 2 ;;
        --missions-args) missions_args=$2; shift 2 ;;
        --append-args) append_args=$2; shift 2 ;;
        --skip-append) skip_append=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "bench-compare.sh: unknown option $1" >&2; exit 2 ;;
        *) positional+=("$1"); shift ;;
    esac
done
if [[ ${#positional[@]} -ne 2 ]]; then
    echo "usage: scripts/bench-compare.sh [--pairs N] [--profile P] [--missions-args \"...\"] [--append-args \"...\"] A B" >&2
    exit 2
fi
if ! [[ $pairs =~ ^[1-9][0-9]*$ ]]; then
    echo "bench-compare.sh: --pairs must be a positive number" >&2
    exit 2
fi
command -v jq >/dev/null || { echo "bench-compare.sh: needs jq" >&2; exit 1; }

repo=$(git rev-parse --show-toplevel)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$profile" in
    dev) profile_dir=debug ;;
    *) profile_dir=$profile ;;
esac
sha_a=$(git -C "$repo" rev-parse --verify "${positional[0]}^{commit}")
sha_b=$(git -C "$repo" rev-parse --verify "${positional[1]}^{commit}")

work=$(mktemp -d "${TMPDIR:-/tmp}/brain-bench-compare.XXXXXX")
cleanup() {
    for side in a b; do
        if [[ -d $work/src-$side ]]; then
            git -C "$repo" worktree remove --force "$work/src-$side" >/dev/null 2>&1 || true
        fi
    done
    git -C "$repo" worktree prune >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "bench-compare: $*" >&2; }

# build SIDE SHA: a worktree of SHA, built, its binary copied out (the next build overwrites
# the one in the shared target directory).
build() {
    local side=$1 sha=$2
    say "building ${sha:0:12} ($side, profile $profile)"
    git -C "$repo" worktree add --quiet --detach "$work/src-$side" "$sha"
    (cd "$work/src-$side" && CARGO_TARGET_DIR=$target_dir cargo build --quiet --locked --profile "$profile" --bin brain)
    cp "$target_dir/$profile_dir/brain" "$work/brain-$side"
}
build a "$sha_a"
build b "$sha_b"

# The bench that drives the serves is the same binary for both sides: B's if it has
# --serve-binary, else A's.
driver=
for side in b a; do
    if "$work/brain-$side" bench missions --help 2>/dev/null | grep -q -- --serve-binary; then
        driver=$work/brain-$side
        break
    fi
done
[[ -n $driver ]] || { say "neither build has 'bench missions --serve-binary'"; exit 1; }
say "bench driver: $(basename "$driver"), $pairs pairs, pair 1 is warm-up"

# run BENCH SIDE PAIR: one run, its JSON line appended to $work/BENCH-SIDE.jsonl.
run() {
    local bench=$1 side=$2 pair=$3 log=$work/$1-$2-$3.log line
    local -a command
    if [[ $bench == missions ]]; then
        # shellcheck disable=SC2206 # the extra flags are meant to be split into words
        command=("$driver" bench missions --own-serve --serve-binary "$work/brain-$side" --json $missions_args)
    else
        # shellcheck disable=SC2206
        command=("$work/brain-$side" bench append $append_args)
    fi
    say "pair $pair: $bench ${side^^}"
    if ! "${command[@]}" >"$log" 2>"$log.err"; then
        say "$bench ${side^^} failed:"
        tail -20 "$log.err" >&2
        exit 1
    fi
    line=$(grep '^{' "$log" | tail -1)
    [[ -n $line ]] || { say "$bench ${side^^} printed no JSON line"; exit 1; }
    echo "$line" >>"$work/$bench-$side.jsonl"
}

benches=(missions)
$skip_append || benches+=(append)
for ((pair = 1; pair <= pairs; pair++)); do
    if ((pair % 2 == 1)); then order=(a b); else order=(b a); fi
    for bench in "${benches[@]}"; do
        for side in "${order[@]}"; do
            run "$bench" "$side" "$pair"
        done
    done
done

echo "A = ${sha_a:0:12} ($(git -C "$repo" log -1 --format=%s "$sha_a" | cut -c1-60))"
echo "B = ${sha_b:0:12} ($(git -C "$repo" log -1 --format=%s "$sha_b" | cut -c1-60))"
echo "profile $profile, $pairs pairs (pair 1 warm-up), $(nproc) cores; B/A > 1: B is higher"
for bench in "${benches[@]}"; do
    jq -rn --arg bench "$bench" \
        --slurpfile a "$work/$bench-a.jsonl" --slurpfile b "$work/$bench-b.jsonl" '
        def median: sort | if length == 0 then null
            elif length % 2 == 1 then .[(length - 1) / 2]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def num: if . == null then "n/a" else (. * 1000 | round / 1000 | tostring) end;
        def pad($n): tostring | . + (" " * ([$n - length, 1] | max));
        ($a | length) as $n
        | "",
          "\($bench): " + ("figure" | pad(32 - ($bench | length))) + ("A" | pad(10))
            + ("B" | pad(10)) + ("B/A per pair" | pad(8 * $n + 2)) + "median  spread",
          ($a[0].results | to_entries[] | select(.value | type == "number") | .key) as $k
          | [range(0; $n) | [$a[.].results[$k], $b[.].results[$k]]] as $values
          | (if $n > 1 then $values[1:] else $values end) as $counted_values
          | [$values[] | if (.[0] | type) == "number" and (.[1] | type) == "number"
                and .[0] != 0 then .[1] / .[0] else null end] as $ratios
          | (if $n > 1 then $ratios[1:] else $ratios end | map(select(. != null))) as $counted
          | "  " + ($k | pad(32))
            + ([$counted_values[][0] | numbers] | median | num | pad(10))
            + ([$counted_values[][1] | numbers] | median | num | pad(10))
            + ([$ratios | to_entries[]
                | (.value | num) + (if .key == 0 and $n > 1 then "w" else "" end) | pad(8)]
               | join(""))
            + "  " + ($counted | median | num | pad(8))
            + (if ($counted | length) > 0
               then "\($counted | min | num)–\($counted | max | num)" else "n/a" end)
        '
done
