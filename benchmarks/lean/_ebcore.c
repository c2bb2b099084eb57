/* _ebcore: a proof of concept of a NumPy-free runtime core. It binds the few functions of LiteRT's
 * C API (libLiteRt.so of the ai-edge-litert wheel) needed to run a single-input model on the CPU,
 * and does the preprocessing a recipe describes (uint8 pixels -> float32 (x - mean[c]) / std[c],
 * or quantized to the input's int8/uint8 scale and zero point) and the outputs' dequantisation in C.
 *
 *   m = _ebcore.Model(model_bytes)      # environment, model, CPU-compiled model, managed buffers
 *   m.input   -> (element_type, dims, scale, zero_point)   element_type: TfLiteType numbers
 *   m.outputs -> [(element_type, dims, scale, zero_point), ...]
 *   m.run(pixels, mean, std) -> [bytes, ...]  each output as native float32 (memoryview.cast('f'))
 *
 * pixels: a bytes-like of H*W*C uint8 (PIL's Image.tobytes() for mode L or RGB), C = the input's
 * last dimension; mean/std: tuples of C floats. Build: see benchmarks/lean_directions.py (gcc -O2
 * -shared -fPIC, -lLiteRt, rpath $ORIGIN). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#include "litert_min.h"

typedef struct {
  int type;
  int rank;
  int dims[LITERT_TENSOR_MAX_RANK];
  size_t count;
  float scale;
  long zero_point;
} Spec;

typedef struct {
  PyObject_HEAD
  PyObject* data; /* the model bytes: LiteRtCreateModelFromBuffer does not copy them */
  LiteRtEnvironment env;
  LiteRtModel model;
  LiteRtCompiledModel compiled;
  Spec in;
  Spec out[16];
  size_t n_out;
  LiteRtTensorBuffer in_buf;
  LiteRtTensorBuffer out_buf[16];
} ModelObject;

static size_t type_size(int t) {
  switch (t) {
    case kLiteRtElementTypeFloat32: case kLiteRtElementTypeInt32: return 4;
    case kLiteRtElementTypeUInt8: case kLiteRtElementTypeInt8: return 1;
    case kLiteRtElementTypeInt16: return 2;
    case kLiteRtElementTypeInt64: return 8;
    default: return 0;
  }
}

static int fail(const char* what, LiteRtStatus s) {
  PyErr_Format(PyExc_RuntimeError, "LiteRT: %s failed (status %d)", what, (int)s);
  return -1;
}
#define CHECK(call, what) do { LiteRtStatus s_ = (call); if (s_ != 0) return fail(what, s_); } while (0)

static void set_dims(Spec* spec, LiteRtLayout* layout) {
  /* a dynamic dimension (-1, e.g. the batch of a Keras export) becomes 1 */
  spec->rank = layout->rank;
  spec->count = 1;
  for (int i = 0; i < spec->rank; i++) {
    if (layout->dimensions[i] < 0) layout->dimensions[i] = 1;
    spec->dims[i] = layout->dimensions[i];
    spec->count *= (size_t)spec->dims[i];
  }
}

static int describe(LiteRtTensor t, Spec* spec, LiteRtRankedTensorType* rt) {
  CHECK(LiteRtGetRankedTensorType(t, rt), "LiteRtGetRankedTensorType");
  spec->type = rt->element_type;
  set_dims(spec, &rt->layout);
  spec->scale = 0.0f;
  spec->zero_point = 0;
  int q = 0;
  if (LiteRtGetQuantizationTypeId(t, &q) == 0 && q == kLiteRtQuantizationPerTensor) {
    LiteRtQuantizationPerTensor pq;
    CHECK(LiteRtGetPerTensorQuantization(t, &pq), "LiteRtGetPerTensorQuantization");
    spec->scale = pq.scale;
    spec->zero_point = (long)pq.zero_point;
  }
  if (type_size(spec->type) == 0) {
    PyErr_Format(PyExc_ValueError, "tensor element type %d is not supported", spec->type);
    return -1;
  }
  return 0;
}

static int Model_init(ModelObject* self, PyObject* args, PyObject* kw) {
  PyObject* data;
  if (!PyArg_ParseTuple(args, "S", &data)) return -1;
  Py_INCREF(data);
  self->data = data;
  CHECK(LiteRtCreateEnvironment(0, NULL, &self->env), "LiteRtCreateEnvironment");
  CHECK(LiteRtCreateModelFromBuffer(self->env, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                                    &self->model), "LiteRtCreateModelFromBuffer");
  LiteRtSignature sig;
  LiteRtParamIndex n_in = 0, n_out = 0;
  CHECK(LiteRtGetModelSignature(self->model, 0, &sig), "LiteRtGetModelSignature");
  CHECK(LiteRtGetNumSignatureInputs(sig, &n_in), "LiteRtGetNumSignatureInputs");
  CHECK(LiteRtGetNumSignatureOutputs(sig, &n_out), "LiteRtGetNumSignatureOutputs");
  if (n_in != 1 || n_out < 1 || n_out > 16) {
    PyErr_Format(PyExc_ValueError, "%zu inputs, %zu outputs: one input, 1-16 outputs supported", n_in, n_out);
    return -1;
  }
  LiteRtOptions opts;
  CHECK(LiteRtCreateOptions(&opts), "LiteRtCreateOptions");
  LiteRtSetOptionsHardwareAccelerators(opts, kLiteRtHwAcceleratorCpu);
  LiteRtStatus s = LiteRtCreateCompiledModel(self->env, self->model, opts, &self->compiled);
  LiteRtDestroyOptions(opts);
  if (s != 0) return fail("LiteRtCreateCompiledModel", s);

  LiteRtTensor t;
  LiteRtRankedTensorType rt;
  CHECK(LiteRtGetSignatureInputTensorByIndex(sig, 0, &t), "LiteRtGetSignatureInputTensorByIndex");
  int dynamic = 0;
  CHECK(LiteRtGetRankedTensorType(t, &rt), "LiteRtGetRankedTensorType");
  for (unsigned i = 0; i < rt.layout.rank; i++) dynamic |= rt.layout.dimensions[i] < 0;
  if (describe(t, &self->in, &rt)) return -1;
  if (dynamic)
    CHECK(LiteRtCompiledModelResizeInputTensor(self->compiled, 0, 0, self->in.dims, (size_t)self->in.rank),
          "LiteRtCompiledModelResizeInputTensor");
  LiteRtLayout layouts[16];
  CHECK(LiteRtGetCompiledModelOutputTensorLayouts(self->compiled, 0, n_out, layouts, true),
        "LiteRtGetCompiledModelOutputTensorLayouts");
  CHECK(LiteRtCreateManagedTensorBuffer(self->env, kLiteRtTensorBufferTypeHostMemory, &rt,
                                        self->in.count * type_size(self->in.type), &self->in_buf),
        "LiteRtCreateManagedTensorBuffer");
  self->n_out = n_out;
  for (size_t i = 0; i < n_out; i++) {
    CHECK(LiteRtGetSignatureOutputTensorByIndex(sig, i, &t), "LiteRtGetSignatureOutputTensorByIndex");
    if (describe(t, &self->out[i], &rt)) return -1;
    rt.layout = layouts[i];
    set_dims(&self->out[i], &rt.layout);
    CHECK(LiteRtCreateManagedTensorBuffer(self->env, kLiteRtTensorBufferTypeHostMemory, &rt,
                                          self->out[i].count * type_size(self->out[i].type),
                                          &self->out_buf[i]),
          "LiteRtCreateManagedTensorBuffer");
  }
  return 0;
}

static void Model_dealloc(ModelObject* self) {
  for (size_t i = 0; i < self->n_out; i++)
    if (self->out_buf[i]) LiteRtDestroyTensorBuffer(self->out_buf[i]);
  if (self->in_buf) LiteRtDestroyTensorBuffer(self->in_buf);
  if (self->compiled) LiteRtDestroyCompiledModel(self->compiled);
  if (self->model) LiteRtDestroyModel(self->model);
  if (self->env) LiteRtDestroyEnvironment(self->env);
  Py_XDECREF(self->data);
  Py_TYPE(self)->tp_free((PyObject*)self);
}

static PyObject* spec_tuple(const Spec* s) {
  PyObject* dims = PyTuple_New(s->rank);
  if (!dims) return NULL;
  for (int i = 0; i < s->rank; i++) PyTuple_SET_ITEM(dims, i, PyLong_FromLong(s->dims[i]));
  return Py_BuildValue("(iNdl)", s->type, dims, (double)s->scale, s->zero_point);
}

static PyObject* Model_input(ModelObject* self, void* closure) { return spec_tuple(&self->in); }

static PyObject* Model_outputs(ModelObject* self, void* closure) {
  PyObject* list = PyList_New((Py_ssize_t)self->n_out);
  if (!list) return NULL;
  for (size_t i = 0; i < self->n_out; i++) {
    PyObject* t = spec_tuple(&self->out[i]);
    if (!t) { Py_DECREF(list); return NULL; }
    PyList_SET_ITEM(list, (Py_ssize_t)i, t);
  }
  return list;
}

static int read_floats(PyObject* seq, float* out, int n, const char* what) {
  PyObject* fast = PySequence_Fast(seq, what);
  if (!fast) return -1;
  if (PySequence_Fast_GET_SIZE(fast) != n) {
    PyErr_Format(PyExc_ValueError, "%s: %d values expected", what, n);
    Py_DECREF(fast);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    out[i] = (float)PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
    if (PyErr_Occurred()) { Py_DECREF(fast); return -1; }
  }
  Py_DECREF(fast);
  return 0;
}

static PyObject* Model_run(ModelObject* self, PyObject* args) {
  Py_buffer px;
  PyObject *mean_o, *std_o;
  if (!PyArg_ParseTuple(args, "y*OO", &px, &mean_o, &std_o)) return NULL;
  int c = self->in.rank ? self->in.dims[self->in.rank - 1] : 1;
  float mean[8], sd[8];
  PyObject* result = NULL;
  if (c < 1 || c > 8) { PyErr_SetString(PyExc_ValueError, "input channels must be 1-8"); goto done; }
  if ((size_t)px.len != self->in.count) {
    PyErr_Format(PyExc_ValueError, "%zd pixel bytes for an input of %zu values", px.len, self->in.count);
    goto done;
  }
  if (read_floats(mean_o, mean, c, "mean") || read_floats(std_o, sd, c, "std")) goto done;

  void* dst;
  if (LiteRtLockTensorBuffer(self->in_buf, &dst, kLiteRtTensorBufferLockModeWrite) != 0) {
    PyErr_SetString(PyExc_RuntimeError, "LiteRT: LiteRtLockTensorBuffer failed");
    goto done;
  }
  const unsigned char* src = (const unsigned char*)px.buf;
  size_t n = self->in.count;
  if (self->in.type == kLiteRtElementTypeFloat32) {
    float* f = (float*)dst;
    for (size_t i = 0; i < n; i++) f[i] = ((float)src[i] - mean[i % c]) / sd[i % c];
  } else if (self->in.type == kLiteRtElementTypeUInt8 || self->in.type == kLiteRtElementTypeInt8) {
    int lo = self->in.type == kLiteRtElementTypeUInt8 ? 0 : -128, hi = lo + 255;
    float qs = self->in.scale > 0 ? 1.0f / self->in.scale : 1.0f;
    for (size_t i = 0; i < n; i++) {
      long q = lrintf(((float)src[i] - mean[i % c]) / sd[i % c] * qs) + self->in.zero_point;
      q = q < lo ? lo : q > hi ? hi : q;
      if (lo) ((int8_t*)dst)[i] = (int8_t)q; else ((uint8_t*)dst)[i] = (uint8_t)q;
    }
  } else {
    LiteRtUnlockTensorBuffer(self->in_buf);
    PyErr_Format(PyExc_ValueError, "input element type %d is not supported", self->in.type);
    goto done;
  }
  LiteRtUnlockTensorBuffer(self->in_buf);

  LiteRtStatus s;
  Py_BEGIN_ALLOW_THREADS
  s = LiteRtRunCompiledModel(self->compiled, 0, 1, &self->in_buf, self->n_out, self->out_buf);
  Py_END_ALLOW_THREADS
  if (s != 0) { fail("LiteRtRunCompiledModel", s); goto done; }

  result = PyList_New((Py_ssize_t)self->n_out);
  if (!result) goto done;
  for (size_t o = 0; o < self->n_out; o++) {
    const Spec* sp = &self->out[o];
    PyObject* b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(sp->count * sizeof(float)));
    if (!b) { Py_CLEAR(result); goto done; }
    float* f = (float*)PyBytes_AS_STRING(b);
    void* srcp;
    if (LiteRtLockTensorBuffer(self->out_buf[o], &srcp, kLiteRtTensorBufferLockModeRead) != 0) {
      Py_DECREF(b); Py_CLEAR(result);
      PyErr_SetString(PyExc_RuntimeError, "LiteRT: LiteRtLockTensorBuffer failed");
      goto done;
    }
    float sc = sp->scale > 0 ? sp->scale : 1.0f;
    for (size_t i = 0; i < sp->count; i++) {
      switch (sp->type) {
        case kLiteRtElementTypeFloat32: f[i] = ((float*)srcp)[i]; break;
        case kLiteRtElementTypeUInt8: f[i] = ((float)((uint8_t*)srcp)[i] - sp->zero_point) * sc; break;
        case kLiteRtElementTypeInt8: f[i] = ((float)((int8_t*)srcp)[i] - sp->zero_point) * sc; break;
        case kLiteRtElementTypeInt16: f[i] = ((float)((int16_t*)srcp)[i] - sp->zero_point) * sc; break;
        case kLiteRtElementTypeInt32: f[i] = (float)((int32_t*)srcp)[i]; break;
        case kLiteRtElementTypeInt64: f[i] = (float)((int64_t*)srcp)[i]; break;
      }
    }
    LiteRtUnlockTensorBuffer(self->out_buf[o]);
    PyList_SET_ITEM(result, (Py_ssize_t)o, b);
  }
done:
  PyBuffer_Release(&px);
  return result;
}

static PyGetSetDef Model_getset[] = {
    {"input", (getter)Model_input, NULL, "(element_type, dims, scale, zero_point)", NULL},
    {"outputs", (getter)Model_outputs, NULL, "[(element_type, dims, scale, zero_point), ...]", NULL},
    {NULL},
};
static PyMethodDef Model_methods[] = {
    {"run", (PyCFunction)Model_run, METH_VARARGS, "run(pixels, mean, std) -> [float32 bytes per output]"},
    {NULL},
};
static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_ebcore.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ebcore", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__ebcore(void) {
  if (PyType_Ready(&ModelType) < 0) return NULL;
  PyObject* m = PyModule_Create(&module);
  if (!m) return NULL;
  Py_INCREF(&ModelType);
  if (PyModule_AddObject(m, "Model", (PyObject*)&ModelType) < 0) { Py_DECREF(&ModelType); Py_DECREF(m); return NULL; }
  return m;
}
