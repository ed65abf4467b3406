// edgeopt TensorFlow Lite Micro harness: one inference on the embedded sample input, compared with the
// output the TFLite Micro interpreter produced for the same input on the build host.
//
// Generated files next to this one: model_data.h/.cc (the model, the arena size, the sample) and op_resolver.h
// (exactly the model's ops). The board port supplies two C functions:
//   uint32_t edgeopt_board_micros(void);         a free-running microsecond counter (wrap-around is fine)
//   void     edgeopt_board_print(const char* s); print one line (UART, semihosting, RTT ...)
// and, as every TFLM port does, DebugLog(const char* format, va_list args) for the interpreter's own messages.
// Define EDGEOPT_NO_MAIN if the board project has its own main() and call edgeopt_run() from it.
//
// The steps are also callable one by one (edgeopt_setup(), edgeopt_infer()): edgeopt's emulator driver uses them
// to run this very file on QEMU with other inputs and other arena sizes.

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "model_data.h"
#include "op_resolver.h"

extern "C" uint32_t edgeopt_board_micros(void);
extern "C" void edgeopt_board_print(const char* line);

// Return codes: 0 ok, 1 schema version, 2 op registration, 3 AllocateTensors (arena too small), 4 input size,
// 5 Invoke, 6 output size, 7 output mismatch, 8 arena larger than kTensorArenaSize, 9 set up twice / not set up.
extern "C" int edgeopt_setup(size_t arena_bytes);
extern "C" int edgeopt_infer(const edgeopt_input_t* input, edgeopt_output_t* output, uint32_t* invoke_us);
extern "C" size_t edgeopt_arena_used_bytes(void);
extern "C" int edgeopt_run_with_arena(size_t arena_bytes);
extern "C" int edgeopt_run(void);

namespace {

// The tensor arena: see model_data.h for which measurement kTensorArenaSize comes from and the margin on top.
// Put it in the fastest RAM that is large enough (DTCM on a Cortex-M7).
alignas(16) uint8_t tensor_arena[kTensorArenaSize];

alignas(alignof(tflite::MicroInterpreter)) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter* interpreter = nullptr;
edgeopt::OpResolver resolver;
size_t arena_in_use = 0;
uint32_t alloc_us = 0;

void Print(const char* format, ...) {
  char line[192];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof(line), format, args);
  va_end(args);
  edgeopt_board_print(line);
}

}  // namespace

extern "C" int edgeopt_setup(size_t arena_bytes) {
  if (interpreter != nullptr) return 9;
  if (arena_bytes > kTensorArenaSize) {
    Print("edgeopt: asked for a %lu-byte arena, kTensorArenaSize is %lu", static_cast<unsigned long>(arena_bytes),
          static_cast<unsigned long>(kTensorArenaSize));
    return 8;
  }
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    Print("edgeopt: model schema version %lu, this TFLM expects %lu",
          static_cast<unsigned long>(model->version()), static_cast<unsigned long>(TFLITE_SCHEMA_VERSION));
    return 1;
  }
  if (edgeopt::RegisterOps(resolver) != kTfLiteOk) {
    Print("edgeopt: registering the model's %d ops failed", edgeopt::kNumOps);
    return 2;
  }
  interpreter = new (interpreter_storage) tflite::MicroInterpreter(model, resolver, tensor_arena, arena_bytes);
  arena_in_use = arena_bytes;
  const uint32_t t_alloc = edgeopt_board_micros();
  if (interpreter->AllocateTensors() != kTfLiteOk) {
    Print("edgeopt: AllocateTensors failed with a %lu-byte arena (exact %lu, %s)",
          static_cast<unsigned long>(arena_bytes), static_cast<unsigned long>(kTensorArenaExactBytes),
          kTensorArenaExactBasis);
    return 3;
  }
  alloc_us = edgeopt_board_micros() - t_alloc;
  const TfLiteTensor* input = interpreter->input(0);
  if (input == nullptr || input->bytes != sizeof(g_sample_input)) {
    Print("edgeopt: input tensor is %lu bytes, the sample is %lu",
          static_cast<unsigned long>(input ? input->bytes : 0), static_cast<unsigned long>(sizeof(g_sample_input)));
    return 4;
  }
  const TfLiteTensor* output = interpreter->output(0);
  if (output == nullptr || output->bytes != sizeof(g_expected_output)) {
    Print("edgeopt: output tensor is %lu bytes, expected %lu",
          static_cast<unsigned long>(output ? output->bytes : 0),
          static_cast<unsigned long>(sizeof(g_expected_output)));
    return 6;
  }
  return 0;
}

extern "C" int edgeopt_infer(const edgeopt_input_t* input, edgeopt_output_t* output, uint32_t* invoke_us) {
  if (interpreter == nullptr) return 9;
  memcpy(interpreter->input(0)->data.raw, input, sizeof(g_sample_input));
  // Timed: the Invoke() call alone.
  const uint32_t t_invoke = edgeopt_board_micros();
  const TfLiteStatus status = interpreter->Invoke();
  if (invoke_us != nullptr) *invoke_us = edgeopt_board_micros() - t_invoke;
  if (status != kTfLiteOk) {
    Print("edgeopt: Invoke failed");
    return 5;
  }
  memcpy(output, interpreter->output(0)->data.raw, sizeof(g_expected_output));
  return 0;
}

extern "C" size_t edgeopt_arena_used_bytes(void) { return interpreter ? interpreter->arena_used_bytes() : 0; }

extern "C" int edgeopt_run_with_arena(size_t arena_bytes) {
  const int setup = edgeopt_setup(arena_bytes);
  if (setup != 0) return setup;
  edgeopt_output_t got[kOutputElements];
  uint32_t invoke_us = 0;
  const int infer = edgeopt_infer(g_sample_input, got, &invoke_us);
  if (infer != 0) return infer;

  int beyond = 0;
  double max_diff = 0.0;
  for (size_t i = 0; i < kOutputElements; ++i) {
    const double a = static_cast<double>(got[i]), b = static_cast<double>(g_expected_output[i]);
    const double diff = a > b ? a - b : b - a;
    if (diff > max_diff) max_diff = diff;
    if (diff > kOutputTolerance) ++beyond;
  }
  Print("edgeopt: model %s, %lu bytes", kModelSha256Prefix, static_cast<unsigned long>(g_model_data_len));
  Print("edgeopt: arena %lu bytes, used %lu (exact %lu, %s)", static_cast<unsigned long>(arena_in_use),
        static_cast<unsigned long>(edgeopt_arena_used_bytes()), static_cast<unsigned long>(kTensorArenaExactBytes),
        kTensorArenaExactBasis);
  Print("edgeopt: allocate_us=%lu invoke_us=%lu", static_cast<unsigned long>(alloc_us),
        static_cast<unsigned long>(invoke_us));
  // max_diff is printed in output units scaled by kOutputDiffPrintScale (1 for integer outputs: quantisation steps).
  Print("edgeopt: output %s: %d of %lu values beyond tolerance, max diff %ld/%ld", beyond ? "MISMATCH" : "OK", beyond,
        static_cast<unsigned long>(kOutputElements), static_cast<long>(max_diff * kOutputDiffPrintScale + 0.5),
        static_cast<long>(kOutputDiffPrintScale));
  return beyond ? 7 : 0;
}

extern "C" int edgeopt_run(void) { return edgeopt_run_with_arena(kTensorArenaSize); }

#ifndef EDGEOPT_NO_MAIN
int main(void) { return edgeopt_run(); }
#endif
