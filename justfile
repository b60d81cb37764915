# qemud's tasks. Run them through ./dev (it installs what is missing first), e.g. `./dev test`.
set shell := ["bash", "-euo", "pipefail", "-c"]

py := ".venv/bin/python"

# list the recipes
default:
    @just --list

# install qemud and its development tools into .venv, and build the test guest (cached in ~/.cache/qemud)
setup:
    {{py}} -m pip install -q -e '.[dev]'
    {{py}} -m tests.support.guest

# bring the reconciler up on the samples: copy them into .qemud/ (keeping your edits) and run the daemon
run:
    .venv/bin/reconcile validate samples
    {{py}} -m tests.support.guest --samples samples .qemud
    @echo "reconcile: config dir $PWD/.qemud; try: .venv/bin/reconcile --config-dir .qemud status"
    exec .venv/bin/reconcile --config-dir .qemud

# run the whole test suite (unit, property and integration tests with real QEMU)
test *args:
    {{py}} -m pytest {{args}}

# ruff and mypy --strict on the packages
lint:
    .venv/bin/ruff check model reconciler tests
    .venv/bin/mypy

# the stateful model check with many more examples (QEMUD_SOAK_EXAMPLES, default 2000), SIGKILLs of the
# reconciler at random moments, then the real-QEMU soak (30 VMs, thousands of file operations and faults
# over a few minutes: QEMUD_SOAK_VMS, _OPS, _SECONDS, _SEED), which prints its figures
soak examples="2000":
    QEMUD_SOAK_EXAMPLES={{examples}} {{py}} -m pytest -q tests/reconciler/test_stateful.py
    QEMUD_FAULT_KILL_ROUNDS="${QEMUD_FAULT_KILL_ROUNDS:-6}" {{py}} -m pytest -q tests/faults/test_kill.py
    {{py}} -m tests.faults.soak

# print the performance figures
bench:
    {{py}} -m tests.bench
