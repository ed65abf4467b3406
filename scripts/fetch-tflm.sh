#!/usr/bin/env bash
# Fetch the TensorFlow Lite Micro sources edgeopt builds for the emulated Cortex-M7, at the pinned commits, in the
# layout of the offline bundle (shared/tflm/tflm-src-90b983c.tar.gz): DEST/tflite-micro/ (tree + its third-party
# downloads) and DEST/extras/mps2_an500_vectors.S. Needs internet, git, wget, unzip, patch, make and a python3 with
# numpy + Pillow (the project's .venv is put first on PATH). Not run in CI (CI uses the bundle).
#
#   bash scripts/fetch-tflm.sh [DEST]          # default: ~/.cache/edgeopt/tflm-src-90b983c
#   export EDGEOPT_TFLM_SRC=DEST               # then: edgeopt build --target cortex-m7 -p int8
#
# The third-party versions are the ones TFLM 90b983c pins itself (its download scripts check their md5 sums):
# flatbuffers v25.9.23 (+ TFLM's patch), gemmlowp 719139ce, ruy d3712831, kissfft v130 (+ patch), CMSIS_6 5782d6f8,
# Cortex_DFP c2c70a97, CMSIS-NN 4ab83cc3, eyalroz/printf f8ed5a9b. As in the bundle, downloads/pigweed (only TFLM's
# code-style presubmit uses it) and downloads/gcc_embedded (Debian's arm-none-eabi-gcc is used instead of the Arm GNU
# 14.3 download) are empty placeholders.
set -euo pipefail

TFLM_COMMIT=90b983c2b3f1480642e040bbd2ddb37b998f3424
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-${HOME}/.cache/edgeopt/tflm-src-${TFLM_COMMIT:0:7}}"

for tool in git wget unzip patch make; do
  command -v "$tool" >/dev/null || { echo "fetch-tflm: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
if [[ -e "$DEST" ]]; then
  echo "fetch-tflm: $DEST exists; remove it to fetch again" >&2
  exit 2
fi
export PATH="$ROOT/.venv/bin:$PATH"
python3 -c "import numpy, PIL" 2>/dev/null || {
  echo "fetch-tflm: python3 needs numpy and Pillow (run scripts/setup.sh for .venv)" >&2; exit 2; }

mkdir -p "$(dirname "$DEST")"
STAGE="$(mktemp -d "$(dirname "$DEST")/.tflm-fetch.XXXXXX")"   # renamed to DEST when complete
trap 'rm -rf "$STAGE"' EXIT
TREE="$STAGE/tflite-micro"
DL=tensorflow/lite/micro/tools/make/downloads

echo "fetch-tflm: tensorflow/tflite-micro @ $TFLM_COMMIT" >&2
git init -q "$TREE"
git -C "$TREE" fetch -q --depth 1 https://github.com/tensorflow/tflite-micro "$TFLM_COMMIT"
git -C "$TREE" -c advice.detachedHead=false checkout -q FETCH_HEAD
rm -rf "$TREE/.git"

mkdir -p "$TREE/$DL/pigweed" "$TREE/$DL/gcc_embedded"
echo "fetch-tflm: third-party sources at the commits TFLM pins (its own download scripts)" >&2
( cd "$TREE"
  make -s -f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_qemu TARGET_ARCH=cortex-m7 \
    OPTIMIZED_KERNEL_DIR=cmsis_nn BASE_GENDIR="$STAGE/gen" third_party_downloads >&2
  result="$(tensorflow/lite/micro/tools/make/ext_libs/eyalroz_printf_download.sh "$DL")"
  [[ "$result" == SUCCESS ]] || { echo "fetch-tflm: printf download: $result" >&2; exit 1; } )
for d in flatbuffers gemmlowp ruy kissfft cmsis cmsis/Cortex_DFP cmsis_nn eyalroz_printf; do
  [[ -d "$TREE/$DL/$d" ]] || { echo "fetch-tflm: $DL/$d was not downloaded" >&2; exit 1; }
done
rm -rf "$STAGE/gen"

# The vector table that boots a TFLM ELF on qemu-system-arm -M mps2-an500 (same as the bundle's extras/).
mkdir -p "$STAGE/extras"
cat > "$STAGE/extras/mps2_an500_vectors.S" <<'ASM'
/* Minimal Cortex-M vector table for qemu-system-arm -M mps2-an500 (ZBT SSRAM1 at 0x0, 4 MiB).
   Reset jumps to newlib/rdimon _start; any fault exits QEMU via semihosting. */
  .syntax unified
  .thumb
  .section .vectors,"a",%progbits
  .global __vectors
__vectors:
  .word 0x00400000          /* initial MSP: top of SSRAM1 (rdimon crt0 resets SP via SYS_HEAPINFO) */
  .word _start              /* Reset (Thumb bit set by linker) */
  .rept 14
  .word __fault
  .endr
  .text
  .thumb_func
  .global __fault
__fault:
  movs r0, #0x18            /* SYS_EXIT */
  ldr  r1, =0x20024         /* ADP_Stopped_RunTimeErrorUnknown */
  bkpt 0xab
1: b 1b
ASM

chmod 755 "$STAGE"
mv "$STAGE" "$DEST"
echo "fetch-tflm: done: export EDGEOPT_TFLM_SRC=$DEST" >&2
