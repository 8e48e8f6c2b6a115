"""The project's own Keras layers, which a saved model needs to load (``custom_objects``).

Today one: ``VggPreprocess``, VGG16's "caffe" preprocessing as the model's first layer, so a
saved ``.keras`` file takes RGB pixels 0..255 and nobody can forget or double the preprocessing.
Defined lazily (Keras is imported on first use), registered under the package name
``bolt_inspection`` so models saved before a module moved still load.
"""

from __future__ import annotations

from typing import Any

from bolt_inspection.core.model.keras_backend import keras

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
_PREPROCESS_CLASS: Any = None


def preprocess_class():
    """Define (once) and return the serialisable preprocessing layer class."""
    global _PREPROCESS_CLASS
    if _PREPROCESS_CLASS is not None:
        return _PREPROCESS_CLASS
    k = keras()

    @k.saving.register_keras_serializable(package='bolt_inspection')
    class VggPreprocess(k.layers.Layer):
        """RGB 0..255 -> BGR minus the ImageNet mean (``keras.applications.vgg16`` caffe mode)."""

        def call(self, inputs):
            bgr = k.ops.flip(inputs, axis=-1)
            return bgr - k.ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=bgr.dtype)

        def compute_output_shape(self, input_shape):
            return input_shape

    _PREPROCESS_CLASS = VggPreprocess
    return VggPreprocess


def custom_objects() -> dict[str, Any]:
    """Objects needed to load a saved model (registered anyway; explicit for clarity)."""
    cls = preprocess_class()
    return {'VggPreprocess': cls, 'bolt_inspection>VggPreprocess': cls}
