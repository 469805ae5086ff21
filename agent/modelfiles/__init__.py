"""Model-file identification by content: is this file model weights, and which?

Used by the process sensor (files a runtime maps or opens), the file sensor (inventory,
downloads, exfiltration) and `umbra-agent scan`. Stdlib only, and written for hostile input:
headers are walked with every length checked against the file before it is followed, reads
are bounded, nothing is unpickled or decompressed, and nothing raises to the caller.

One module per format (gguf, safetensors, pytorch, onnx, npy, keras, tflite, coreml), the
bounded readers they share (window, ziplist, protowire), the catalog they read
(`agent/catalog/model_formats.toml`, through formats), and `identify`, the entry point.
`ollama` names Ollama's anonymous blobs; `training` recognises fine-tuning artifacts.
"""

from agent.modelfiles.identify import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MIN_MODEL_BYTES,
    identify_file,
    identify_header,
    looks_like_model_quick,
)
from agent.modelfiles.model import Identification, ModelFileInfo, Verdict
from agent.modelfiles.ollama import OllamaLayer, OllamaManifest, ollama_blob_names, read_ollama_manifest
from agent.modelfiles.training import TRAINING_LABELS, classify_training_artifact

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MIN_MODEL_BYTES",
    "TRAINING_LABELS",
    "Identification",
    "ModelFileInfo",
    "OllamaLayer",
    "OllamaManifest",
    "Verdict",
    "classify_training_artifact",
    "identify_file",
    "identify_header",
    "looks_like_model_quick",
    "ollama_blob_names",
    "read_ollama_manifest",
]
