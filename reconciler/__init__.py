"""qemud's reconciler: scan the config directory, plan, run QEMU, publish status."""
