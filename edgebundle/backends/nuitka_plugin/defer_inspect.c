/* edgebundle: Nuitka's patch of the inspect module, made when inspect is imported, not at start.
 *
 * At start-up Nuitka's main() calls patchInspectModule(), which imports inspect (and with it dis and
 * opcode) to replace a few of its functions, and types.coroutine, with ones that know compiled
 * functions. A runtime that never imports inspect (the image, --batch and --self-test modes) pays
 * ~0.5 MB of peak RSS and milliseconds of start-up for it. The link wraps patchInspectModule (see
 * nuitka.py): at start it only leaves the real patch as sys._edgebundle_patch_inspect, which our
 * plugin's post-load code for inspect calls once inspect has been imported, before whoever imported
 * it gets it back; if inspect is already imported, it patches at once, as Nuitka would. */

#include <Python.h>

void __real_patchInspectModule(PyThreadState *tstate);

#define DEFERRED "_edgebundle_patch_inspect"

static PyObject *patch_now(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    __real_patchInspectModule(PyThreadState_Get());
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef patch_now_def = {DEFERRED, patch_now, METH_NOARGS, NULL};

void __wrap_patchInspectModule(PyThreadState *tstate) {
    PyObject *modules = PyImport_GetModuleDict();
    if (modules != NULL && PyDict_GetItemString(modules, "inspect") != NULL) {
        __real_patchInspectModule(tstate);
        return;
    }
    PyObject *function = PyCFunction_New(&patch_now_def, NULL);
    if (function == NULL || PySys_SetObject(DEFERRED, function) != 0) {
        PyErr_Clear();
        __real_patchInspectModule(tstate); /* could not defer: patch now, as Nuitka does */
    }
    Py_XDECREF(function);
}
