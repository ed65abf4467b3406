// edgeopt stub (compile checks only).
#ifndef EDGEOPT_STUB_SCHEMA_GENERATED_H_
#define EDGEOPT_STUB_SCHEMA_GENERATED_H_
#include <cstdint>
namespace tflite {
struct Model {
  uint32_t version() const;
};
const Model* GetModel(const void* buf);
}  // namespace tflite
#endif
