#!/usr/bin/env bash
# Build the Cortex-M4 proof of hakmem-baremetal and run it under QEMU
# (mps2-an386). The program reports over semihosting and exits with its
# checks' status, which this script returns unchanged (non-zero on any failed
# check, a panic, a fault, or a hang past the timeout).
#
# -icount ties QEMU's clock to the instruction count, so the SysTick interrupt
# (which allocates and frees while the main program does) lands at the same
# instructions on every run: a run is reproducible. Set HAKMEM_QEMU_ICOUNT=off
# to let the interrupt land wherever the host's speed puts it instead.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked
elf="${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/hakmem-firmware"
icount=(-icount shift=4)
if [ "${HAKMEM_QEMU_ICOUNT:-on}" = off ]; then
    icount=()
fi
status=0
timeout 300 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -monitor none -serial none -semihosting-config enable=on,target=native \
    "${icount[@]}" -kernel "$elf" </dev/null || status=$?
if [ "$status" -ne 0 ]; then
    echo "firmware: FAILED (QEMU exit status $status)" >&2
fi
exit "$status"
