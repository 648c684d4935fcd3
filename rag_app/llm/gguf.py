"""Write a fine-tune of a GGUF model back to GGUF, for llama.cpp.

The bundled SmolLM2 ships as GGUF; medqa converts it to a Hugging Face checkpoint to fine-tune and merge
LoRA adapters (:func:`rag_app.llm.convert.convert_gguf`). llama.cpp reads GGUF only, so a merged fine-tune of
that model is written back into a copy of the original file: every metadata field (architecture,
tokenizer, chat template) is copied; the weight matrices are written in one type (``F16`` by default:
the float weights to 16 bits, which llama.cpp reads a prompt with fastest on a CPU without AVX512; ``Q8_0`` and the
bundled 4-bit types are slower there, ``benchmarks/bench_chat.py``), from the fine-tune's values where it changed
them; norms stay float32. The file is written
with gguf-py (``gguf.GGUFWriter``), the library llama.cpp's own converters use.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from rag_app.files import atomic_path

logger = logging.getLogger("rag_app")

#: Type of the weight matrices in the GGUF files medqa writes (16-bit float: the answers match the float model's).
GGUF_QTYPE = "F16"

#: The checkpoint's config keys that must equal the GGUF's for its tensors to fit.
_SHAPE_KEYS = {
    "hidden_size": "embedding_length",
    "num_hidden_layers": "block_count",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
}


def llamacpp_available() -> bool:
    """True when ``llama-cpp-python`` is installed."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def is_llamacpp(llm: Any) -> bool:
    """True for an LLM of medqa's llama.cpp backend (:class:`rag_app.llm.llamacpp.MedQALlamaCPP`).

    Looked up in the loaded modules: the backend (and llama-cpp-python) is only imported when a model uses it.
    """
    module = sys.modules.get("rag_app.llm.llamacpp")
    return module is not None and isinstance(llm, module.MedQALlamaCPP)


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def fits(checkpoint: Path, template: Path) -> bool:
    """True when a Hugging Face checkpoint has the architecture and shapes of a (llama) GGUF file."""
    import gguf

    config_path = Path(checkpoint) / "config.json"
    if not config_path.is_file():
        return False
    config = json.loads(config_path.read_text(encoding="utf-8"))
    reader = gguf.GGUFReader(str(template))
    arch = _field(reader, "general.architecture")
    if arch != "llama" or config.get("model_type") != "llama":
        return False
    return all(config.get(hf) == _field(reader, f"{arch}.{key}") for hf, key in _SHAPE_KEYS.items())


def _permute(weights: Any, n_head: int) -> Any:
    # llama.cpp stores q/k rows in the order its rotary embedding reads them (as its HF converter does).
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def export_gguf(checkpoint: str | Path, template: str | Path, output: str | Path, qtype: str = GGUF_QTYPE) -> Path:
    """Write ``checkpoint`` (a fine-tune of the model in ``template``) as a GGUF file, atomically.

    Args:
        checkpoint: Hugging Face checkpoint folder (safetensors) with the architecture of ``template``.
        template: The GGUF file the checkpoint's base model came from.
        output: The ``.gguf`` file to write (replaced if it exists).
        qtype: Quantization of the tensors the fine-tune changed (a ``gguf.GGMLQuantizationType`` name).

    Returns:
        ``output``.

    Raises:
        ValueError: If the checkpoint does not fit the template.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    checkpoint, template, output = Path(checkpoint), Path(template), Path(output)
    if not fits(checkpoint, template):
        raise ValueError(f"{checkpoint} does not have the architecture and shapes of {template.name}")
    reader = gguf.GGUFReader(str(template))
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    weights: dict[str, Any] = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    new: dict[str, Any] = {}
    for hf_name, value in weights.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            continue  # e.g. a tied lm_head: GGUF keeps the embedding once
        value = value.astype(np.float32)
        kind = name.split(".")[-2]
        new[name] = _permute(value, heads[kind]) if kind in heads else value
    target = gguf.GGMLQuantizationType[qtype]

    changed = 0
    tensors = []
    for tensor in reader.tensors:
        data, dtype = tensor.data, tensor.tensor_type
        mine = new.get(tensor.name)
        if mine is not None and dtype == gguf.GGMLQuantizationType.F32:
            if not np.array_equal(data.reshape(mine.shape), mine):
                data, changed = mine, changed + 1
        elif mine is not None or dtype != target:
            values = gguf.quants.dequantize(tensor.data, dtype)
            if mine is not None and not np.allclose(values.reshape(mine.shape), mine, rtol=0, atol=1e-6):
                values, changed = mine, changed + 1
            if dtype != target or values is mine:  # re-quantized to one type; an untouched tensor of that type is copied
                data, dtype = gguf.quants.quantize(np.ascontiguousarray(values, dtype=np.float32), target), target
        tensors.append((tensor.name, data, dtype))

    with atomic_path(output) as tmp:  # an interrupted export never leaves half a model behind
        writer = gguf.GGUFWriter(str(tmp), arch=_field(reader, "general.architecture"), endianess=reader.endianess)
        for field in reader.fields.values():
            if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) or field.name.startswith("GGUF."):
                continue  # written by GGUFWriter itself, or below
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{qtype}"])
        for name, data, dtype in tensors:
            writer.add_tensor(name, data, raw_dtype=dtype)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file(progress=False)
        finally:
            writer.close()
    logger.info("wrote %s: %d of %d tensors changed by the fine-tune (%s)", output, changed, len(tensors), qtype)
    return output
