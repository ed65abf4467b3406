// edgeopt stub (compile checks only): the subset of TFLM's TfLiteTensor/TfLiteStatus the harness uses.
#ifndef EDGEOPT_STUB_TFLITE_C_COMMON_H_
#define EDGEOPT_STUB_TFLITE_C_COMMON_H_
#include <cstddef>
#include <cstdint>
typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef union TfLitePtrUnion {
  int32_t* i32;
  float* f;
  int8_t* int8;
  uint8_t* uint8;
  int16_t* i16;
  char* raw;
  const char* raw_const;
  void* data;
} TfLitePtrUnion;
typedef struct TfLiteTensor {
  int type;
  TfLitePtrUnion data;
  void* dims;
  size_t bytes;
} TfLiteTensor;
#endif
