// edgeopt's driver for running the generated harness (main.cc, built with -DEDGEOPT_NO_MAIN) on QEMU's MPS2-AN500
// (Cortex-M7) with semihosting. Not part of the board bundle.
//
//   qemu-system-arm -M mps2-an500 -nographic -semihosting-config enable=on,target=native,arg=fw,arg=arena=N,...
//
// Arguments (argv through semihosting): arena=N (default kTensorArenaSize), inputs=FILE (raw input tensors, read
// through semihosting) and count=K. It runs edgeopt_run_with_arena(N) (the harness's own check on the embedded
// sample), then each of the K inputs, and prints machine-readable lines:
//   EDGEOPT out <i> <ticks> <hex bytes of the output tensor>
//   EDGEOPT rc=<code> arena=<N> used=<arena_used_bytes()>
// <ticks>: CMSDK APB timer 0 (25 MHz) ticks around Invoke(). Under -icount the timer follows the instruction count
// (shift 0: 1 ns per instruction, so 1 tick = 40 instructions): a relative cost, not cycles, not a latency.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "model_data.h"

extern "C" int edgeopt_setup(size_t arena_bytes);
extern "C" int edgeopt_infer(const edgeopt_input_t* input, edgeopt_output_t* output, uint32_t* invoke_us);
extern "C" size_t edgeopt_arena_used_bytes(void);
extern "C" int edgeopt_run_with_arena(size_t arena_bytes);

namespace {

struct CmsdkTimer {
  volatile uint32_t ctrl, value, reload, intstatus;
};
CmsdkTimer* const kTimer0 = reinterpret_cast<CmsdkTimer*>(0x40000000u);

uint32_t Ticks() { return 0xFFFFFFFFu - kTimer0->value; }

edgeopt_input_t input_buf[kInputElements];
edgeopt_output_t output_buf[kOutputElements];

}  // namespace

extern "C" uint32_t edgeopt_board_micros(void) { return Ticks() / 25u; }
extern "C" void edgeopt_board_print(const char* line) { printf("%s\n", line); }

int main(int argc, char** argv) {
  kTimer0->ctrl = 0;
  kTimer0->reload = 0xFFFFFFFFu;
  kTimer0->value = 0xFFFFFFFFu;
  kTimer0->ctrl = 1;

  size_t arena = kTensorArenaSize;
  const char* inputs = nullptr;
  long count = 0;
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "arena=", 6) == 0) arena = strtoul(argv[i] + 6, nullptr, 10);
    if (strncmp(argv[i], "inputs=", 7) == 0) inputs = argv[i] + 7;
    if (strncmp(argv[i], "count=", 6) == 0) count = strtol(argv[i] + 6, nullptr, 10);
  }
  int rc = edgeopt_run_with_arena(arena);
  if (rc == 0 && inputs != nullptr) {
    FILE* f = fopen(inputs, "rb");
    if (f == nullptr) {
      printf("EDGEOPT cannot open %s\n", inputs);
      rc = 20;
    }
    for (long i = 0; rc == 0 && i < count; ++i) {
      if (fread(input_buf, sizeof(input_buf), 1, f) != 1) {
        printf("EDGEOPT short read of input %ld\n", i);
        rc = 21;
        break;
      }
      const uint32_t t0 = Ticks();
      rc = edgeopt_infer(input_buf, output_buf, nullptr);
      const uint32_t ticks = Ticks() - t0;
      if (rc != 0) break;
      printf("EDGEOPT out %ld %lu ", i, static_cast<unsigned long>(ticks));
      const unsigned char* bytes = reinterpret_cast<const unsigned char*>(output_buf);
      for (size_t b = 0; b < sizeof(output_buf); ++b) printf("%02x", bytes[b]);
      printf("\n");
    }
    if (f != nullptr) fclose(f);
  }
  printf("EDGEOPT rc=%d arena=%lu used=%lu\n", rc, static_cast<unsigned long>(arena),
         static_cast<unsigned long>(edgeopt_arena_used_bytes()));
  return rc;
}
