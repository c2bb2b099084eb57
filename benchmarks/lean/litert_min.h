/* The subset of LiteRT's C API (github.com/google-ai-edge/LiteRT, tag v2.1.6, litert/c/ headers,
 * Apache-2.0) that _ebcore.c uses, declared here so that building needs no LiteRT checkout.
 * Layouts match the static_asserts of litert_layout.h / litert_model_types.h (LP64). */
#ifndef EB_LITERT_MIN_H_
#define EB_LITERT_MIN_H_
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct LiteRtEnvironmentT* LiteRtEnvironment;
typedef struct LiteRtModelT* LiteRtModel;
typedef struct LiteRtSignatureT* LiteRtSignature;
typedef struct LiteRtTensorT* LiteRtTensor;
typedef struct LiteRtOptionsT* LiteRtOptions;
typedef struct LiteRtCompiledModelT* LiteRtCompiledModel;
typedef struct LiteRtTensorBufferT* LiteRtTensorBuffer;
typedef struct LiteRtEnvOption LiteRtEnvOption; /* not used: zero options */

typedef int LiteRtStatus; /* kLiteRtStatusOk = 0 */
typedef size_t LiteRtParamIndex;
typedef int LiteRtHwAcceleratorSet;
enum { kLiteRtHwAcceleratorCpu = 1 };
enum { kLiteRtTensorBufferTypeHostMemory = 1 };
enum { kLiteRtTensorBufferLockModeRead = 0, kLiteRtTensorBufferLockModeWrite = 1 };
enum { kLiteRtQuantizationPerTensor = 1 };
enum { /* LiteRtElementType = TfLiteType */
  kLiteRtElementTypeFloat32 = 1, kLiteRtElementTypeInt32 = 2, kLiteRtElementTypeUInt8 = 3,
  kLiteRtElementTypeInt64 = 4, kLiteRtElementTypeInt16 = 7, kLiteRtElementTypeInt8 = 9,
};

#define LITERT_TENSOR_MAX_RANK 8
typedef struct {
  unsigned int rank : 7;
  bool has_strides : 1;
  int32_t dimensions[LITERT_TENSOR_MAX_RANK];
  uint32_t strides[LITERT_TENSOR_MAX_RANK];
} LiteRtLayout;
typedef struct {
  int element_type; /* LiteRtElementType */
  LiteRtLayout layout;
} LiteRtRankedTensorType;
typedef struct {
  float scale;
  int64_t zero_point;
} LiteRtQuantizationPerTensor;

_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType");
_Static_assert(sizeof(LiteRtQuantizationPerTensor) == 16, "LiteRtQuantizationPerTensor");

LiteRtStatus LiteRtCreateEnvironment(int num_options, const LiteRtEnvOption* options,
                                     LiteRtEnvironment* environment);
void LiteRtDestroyEnvironment(LiteRtEnvironment environment);
LiteRtStatus LiteRtCreateModelFromBuffer(LiteRtEnvironment environment, const void* buffer_addr,
                                         size_t buffer_size, LiteRtModel* model);
void LiteRtDestroyModel(LiteRtModel model);
LiteRtStatus LiteRtGetNumModelSignatures(LiteRtModel model, LiteRtParamIndex* num_signatures);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel model, LiteRtParamIndex signature_index,
                                     LiteRtSignature* signature);
LiteRtStatus LiteRtGetNumSignatureInputs(LiteRtSignature signature, LiteRtParamIndex* n);
LiteRtStatus LiteRtGetNumSignatureOutputs(LiteRtSignature signature, LiteRtParamIndex* n);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature signature,
                                                  LiteRtParamIndex input_idx, LiteRtTensor* tensor);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature signature,
                                                   LiteRtParamIndex output_idx, LiteRtTensor* tensor);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor tensor, LiteRtRankedTensorType* type);
LiteRtStatus LiteRtGetQuantizationTypeId(LiteRtTensor tensor, int* q_type_id);
LiteRtStatus LiteRtGetPerTensorQuantization(LiteRtTensor tensor, LiteRtQuantizationPerTensor* q);
LiteRtStatus LiteRtCreateOptions(LiteRtOptions* options);
void LiteRtDestroyOptions(LiteRtOptions options);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions options,
                                                  LiteRtHwAcceleratorSet accelerators);
LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment environment, LiteRtModel model,
                                       LiteRtOptions options, LiteRtCompiledModel* compiled_model);
LiteRtStatus LiteRtCompiledModelResizeInputTensor(LiteRtCompiledModel compiled_model,
                                                  LiteRtParamIndex signature_index,
                                                  LiteRtParamIndex input_index, const int* dims,
                                                  size_t dims_size);
LiteRtStatus LiteRtGetCompiledModelOutputTensorLayouts(LiteRtCompiledModel compiled_model,
                                                       LiteRtParamIndex signature_index,
                                                       size_t num_layouts, LiteRtLayout* layouts,
                                                       bool update_allocation);
void LiteRtDestroyCompiledModel(LiteRtCompiledModel compiled_model);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel compiled_model,
                                    LiteRtParamIndex signature_index, size_t num_input_buffers,
                                    LiteRtTensorBuffer* input_buffers, size_t num_output_buffers,
                                    LiteRtTensorBuffer* output_buffers);
LiteRtStatus LiteRtCreateManagedTensorBuffer(LiteRtEnvironment env, int buffer_type,
                                             const LiteRtRankedTensorType* tensor_type,
                                             size_t buffer_size, LiteRtTensorBuffer* buffer);
void LiteRtDestroyTensorBuffer(LiteRtTensorBuffer buffer);
LiteRtStatus LiteRtLockTensorBuffer(LiteRtTensorBuffer buffer, void** host_mem_addr, int lock_mode);
LiteRtStatus LiteRtUnlockTensorBuffer(LiteRtTensorBuffer buffer);
#endif
