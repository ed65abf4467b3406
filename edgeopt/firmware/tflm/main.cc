// edgeopt TensorFlow Lite Micro harness: one inference on the embedded sample input, compared with the
// output the TFLite Micro interpreter produced for the same input on the build host.
//
// Generated files next to this one: model_data.h/.cc (the model, the arena size, the sample) and op_resolver.h
// (exactly the model's ops). The board port supplies two C functions:
//   uint32_t edgeopt_board_micros(void);         a free-running microsecond counter (wrap-around is fine)
//   void     edgeopt_board_print(const char* s); print one line (UART, semihosting, RTT ...)
// and, as every TFLM port does, DebugLog() for the interpreter's own messages.
// Define EDGEOPT_NO_MAIN if the board project has its own main() and call edgeopt_run() from it.

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "model_data.h"
#include "op_resolver.h"

extern "C" uint32_t edgeopt_board_micros(void);
extern "C" void edgeopt_board_print(const char* line);

namespace {

constexpr uint32_t kExpectedSchemaVersion = 3;  // TFLITE_SCHEMA_VERSION

// The tensor arena: measured on the build host with the real TFLite Micro interpreter, plus a stated margin
// (see model_data.h and README.md). Put it in the fastest RAM that is large enough (DTCM on a Cortex-M7).
alignas(16) static uint8_t tensor_arena[kTensorArenaSize];

void Print(const char* format, ...) {
  char line[192];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof(line), format, args);
  va_end(args);
  edgeopt_board_print(line);
}

}  // namespace

extern "C" int edgeopt_run(void) {
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != kExpectedSchemaVersion) {
    Print("edgeopt: model schema version %lu, this TFLM expects %lu",
          static_cast<unsigned long>(model->version()), static_cast<unsigned long>(kExpectedSchemaVersion));
    return 1;
  }

  static edgeopt::OpResolver resolver;
  if (edgeopt::RegisterOps(resolver) != kTfLiteOk) {
    Print("edgeopt: registering the model's %d ops failed", edgeopt::kNumOps);
    return 2;
  }

  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  const uint32_t t_alloc = edgeopt_board_micros();
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    Print("edgeopt: AllocateTensors failed with a %lu-byte arena (host measured %lu bytes)",
          static_cast<unsigned long>(kTensorArenaSize), static_cast<unsigned long>(kTensorArenaExactBytes));
    return 3;
  }
  const uint32_t alloc_us = edgeopt_board_micros() - t_alloc;

  TfLiteTensor* input = interpreter.input(0);
  if (input == nullptr || input->bytes != sizeof(g_sample_input)) {
    Print("edgeopt: input tensor is %lu bytes, the sample is %lu",
          static_cast<unsigned long>(input ? input->bytes : 0), static_cast<unsigned long>(sizeof(g_sample_input)));
    return 4;
  }
  memcpy(input->data.raw, g_sample_input, sizeof(g_sample_input));

  // Timed: the Invoke() call alone.
  const uint32_t t_invoke = edgeopt_board_micros();
  const TfLiteStatus status = interpreter.Invoke();
  const uint32_t invoke_us = edgeopt_board_micros() - t_invoke;
  if (status != kTfLiteOk) {
    Print("edgeopt: Invoke failed");
    return 5;
  }

  const TfLiteTensor* output = interpreter.output(0);
  if (output == nullptr || output->bytes != sizeof(g_expected_output)) {
    Print("edgeopt: output tensor is %lu bytes, expected %lu",
          static_cast<unsigned long>(output ? output->bytes : 0),
          static_cast<unsigned long>(sizeof(g_expected_output)));
    return 6;
  }
  edgeopt_output_t got[kOutputElements];
  memcpy(got, output->data.raw, sizeof(got));
  int beyond = 0;
  double max_diff = 0.0;
  for (size_t i = 0; i < kOutputElements; ++i) {
    const double a = static_cast<double>(got[i]), b = static_cast<double>(g_expected_output[i]);
    const double diff = a > b ? a - b : b - a;
    if (diff > max_diff) max_diff = diff;
    if (diff > kOutputTolerance) ++beyond;
  }

  Print("edgeopt: model %s, %lu bytes", kModelSha256Prefix, static_cast<unsigned long>(g_model_data_len));
  Print("edgeopt: arena %lu bytes, used %lu (host measured %lu)", static_cast<unsigned long>(kTensorArenaSize),
        static_cast<unsigned long>(interpreter.arena_used_bytes()),
        static_cast<unsigned long>(kTensorArenaExactBytes));
  Print("edgeopt: allocate_us=%lu invoke_us=%lu", static_cast<unsigned long>(alloc_us),
        static_cast<unsigned long>(invoke_us));
  // max_diff is printed in output units scaled by kOutputDiffPrintScale (1 for integer outputs: quantisation steps).
  Print("edgeopt: output %s: %d of %lu values beyond tolerance, max diff %ld/%ld", beyond ? "MISMATCH" : "OK", beyond,
        static_cast<unsigned long>(kOutputElements), static_cast<long>(max_diff * kOutputDiffPrintScale + 0.5),
        static_cast<long>(kOutputDiffPrintScale));
  return beyond ? 7 : 0;
}

#ifndef EDGEOPT_NO_MAIN
int main(void) { return edgeopt_run(); }
#endif
