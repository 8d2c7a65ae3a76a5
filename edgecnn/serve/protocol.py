"""KServe v2 / Open Inference Protocol REST bodies, and the tensor (de)coding the service needs.

The JSON bodies follow https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
(the protocol Triton speaks too). Two additions, both from Triton:

* the *binary tensor data* extension: a request whose ``Inference-Header-Content-Length`` header
  is N carries N bytes of JSON followed by raw little-endian tensor bytes; an input then has
  ``"parameters": {"binary_data_size": K}`` instead of ``data``. Outputs come back the same way
  when the request asks with ``"parameters": {"binary_data_output": true}`` (or per output
  ``"parameters": {"binary_data": true}``). It saves the JSON encode/decode of every pixel.
* the ``classify`` response of the image-upload endpoint (``ClassifyResponse``).

The pydantic models below are the request body the service validates and the response bodies it
documents in ``/openapi.json``.

Every problem with a client's body is a :class:`ProtocolError` carrying the HTTP status to answer.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.serve.json_tensor import MAX_HEADER_BYTES, DataError, DataSpan, cut_data, parse_numbers

HEADER_LENGTH = "inference-header-content-length"

# KServe datatype name -> numpy dtype. BYTES (strings) is not a pixel type and is refused.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
# What the service accepts for an image input: float pixels 0-255 (the edgecnn contract), or uint8 pixels.
INPUT_DATATYPES = ("FP32", "UINT8")


def datatype_of(dtype: str | np.dtype) -> str:
    """The KServe name of a numpy dtype (``float32`` -> ``FP32``)."""
    dtype = np.dtype(dtype)
    for name, dt in DATATYPES.items():
        if dt == dtype:
            return name
    return "BYTES"


class ProtocolError(EdgecnnError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class _Body(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), extra="ignore")


class _Strict(BaseModel):
    """Request bodies: exact JSON types (no "1" or 1.0 or true for an integer) and no unknown fields."""

    model_config = ConfigDict(protected_namespaces=(), extra="forbid", strict=True)


class RequestInput(_Strict):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    # After parse_infer_request: a DataSpan (where the numbers lie in the body), or None.
    data: Any = None


class RequestOutput(_Strict):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Strict):
    """The body of ``POST .../infer`` (validated on every request, by :func:`parse_infer_request`)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


# Response bodies. They document the routes in /openapi.json (and /docs); the infer route encodes
# its body by hand (encode_infer_response) and only names InferenceResponse as its schema.


class ErrorResponse(_Body):
    """Every 4xx/5xx answer: one readable message."""

    error: str


class LiveResponse(_Body):
    live: bool


class ReadyResponse(_Body):
    ready: bool


class ServerMetadata(_Body):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Body):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Body):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="edgecnn additions: the version answered, labels, preprocessing, artifact facts.")


class ModelReady(_Body):
    name: str
    version: str
    ready: bool


class ResponseOutput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_size": N} when the tensor follows the JSON part as raw bytes.')
    data: list[Any] | None = Field(None, description="The values, row-major; absent for a binary output.")


class InferenceResponse(_Body):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class ImageInfo(_Body):
    format: str
    width: int
    height: int


class Prediction(_Body):
    label: str
    index: int
    probability: float


class ClassifyResponse(_Body):
    model_name: str
    model_version: str
    image: ImageInfo = Field(description="The upload as received, before resizing.")
    predictions: list[Prediction]


class RepositoryModel(_Body):
    name: str
    version: str
    state: str
    default: bool


class ReloadResponse(_Body):
    model: str
    generation: int
    default: str | None = None
    loaded: list[str]
    unchanged: list[str]
    removed: list[str]


def parse_infer_request(body: bytes | bytearray, header_length: str | None,
                        max_header: int = MAX_HEADER_BYTES) -> tuple[InferenceRequest, bytes | memoryview]:
    """Split and validate an infer body; returns the request and the binary tail (b"" for pure JSON).

    Each input's JSON ``data`` is not parsed here: it becomes a :class:`DataSpan` (where its numbers
    lie in the body) that :func:`decode_input` converts once the shape is checked.

    Raises:
        ProtocolError: not JSON, too deeply nested, fields of the wrong type or unknown, a bad header
            length, JSON besides the tensor data over ``max_header`` bytes, ``data`` not a list.
    """
    tail = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(
                f"Inference-Header-Content-Length must be an integer byte count. Received {header_length[:40]!r}."
            ) from None
        if not 0 < n <= len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length={n} does not fit the body of {len(body)} bytes; it must count "
                "the JSON header that starts the body."
            )
        view = memoryview(body)
        body, tail = bytes(view[:n]), view[n:]          # the tensor bytes stay where they are
    if not body or body.isspace():
        raise ProtocolError("empty request body; send a JSON inference request with an 'inputs' list.")
    try:
        header, spans = cut_data(body, max_header)
        # pydantic's Rust parser: it stops deep nesting at a fixed depth with an error instead of a
        # RecursionError, and the header it sees is small (cut_data), so parsing cannot amplify.
        request = InferenceRequest.model_validate_json(header)
    except DataError as e:
        raise ProtocolError(str(e)) from None
    except ValidationError as e:
        raise ProtocolError(f"invalid inference request: {_first_error(e)}") from None
    used: set[int] = set()
    for inp in request.inputs:       # an index cut_data wrote, once: anything else stays and is refused later
        index = inp.data
        if type(index) is int and 0 <= index < len(spans) and index not in used:
            used.add(index)
            inp.data = spans[index]
    return request, tail


def _first_error(e: ValidationError) -> str:
    errors = e.errors(include_url=False, include_input=False)
    if not errors:
        return "malformed body"
    err = errors[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc + ': ' if loc else ''}{err.get('msg', 'invalid')}{more}"


def decode_input(inp: RequestInput, binary: memoryview | None, expected: tuple[int, ...], max_batch: int) -> np.ndarray:
    """Turn one request input into a float32 NHWC batch of pixels, checking datatype, shape and values.

    The declared shape is checked first, so no more than ``max_batch`` images are ever materialised;
    JSON numbers go straight into a float32 array (:func:`edgecnn.serve.json_tensor.parse_numbers`).
    Every value must be finite and lie in 0-255 (UINT8 values must also be integers).

    Args:
        inp: the request input.
        binary: its bytes under the binary extension, else None (then ``inp.data`` is used).
        expected: the model's (H, W, C).
        max_batch: the largest N accepted.

    Raises:
        ProtocolError: what is wrong, with the input's name, the value received and what is allowed.
    """
    name = inp.name
    if inp.datatype not in INPUT_DATATYPES:
        raise ProtocolError(
            f"input {name!r}: datatype must be one of {', '.join(INPUT_DATATYPES)} (RGB pixels 0-255). "
            f"Received datatype={inp.datatype!r}."
        )
    want = [-1, *expected]
    shape = inp.shape
    if len(shape) != len(want) or any(s != w for s, w in zip(shape[1:], want[1:])) or not 1 <= shape[0] <= max_batch:
        raise ProtocolError(
            f"input {name!r}: shape must be {want} with a batch of 1 to {max_batch}. Received shape={shape}; "
            f"resize images to {expected[0]}x{expected[1]} RGB."
        )
    count = math.prod(shape)
    dtype = DATATYPES[inp.datatype]
    if binary is not None:
        if inp.data is not None:
            raise ProtocolError(f"input {name!r}: has both 'data' and binary_data_size; send one of them.")
        if len(binary) != count * dtype.itemsize:
            raise ProtocolError(
                f"input {name!r}: shape {shape} of {inp.datatype} needs {count * dtype.itemsize} bytes. "
                f"Received binary_data_size={len(binary)}."
            )
        # FP32: a view of the body (no copy) unless the tail is not 4-byte aligned; UINT8: converted once.
        array = np.require(np.frombuffer(binary, dtype=dtype.newbyteorder("<")).astype(np.float32, copy=False),
                           requirements="A")
        if inp.datatype == "UINT8":
            return array.reshape(shape)        # 0-255 by construction
    else:
        if inp.data is None:
            raise ProtocolError(f"input {name!r}: has no 'data' (and no binary_data_size parameter).")
        if not isinstance(inp.data, DataSpan):
            raise ProtocolError(f"input {name!r}: 'data' must be a flat (row-major) or nested list of numbers with "
                                f"shape {shape}. Received {type(inp.data).__name__} data.")
        try:
            array = parse_numbers(inp.data, shape, name)
        except DataError as e:
            raise ProtocolError(str(e)) from None
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ProtocolError(f"input {name!r}: data contains NaN or infinity; pixels must be finite numbers 0-255.")
    if low < 0 or high > 255:
        raise ProtocolError(f"input {name!r}: {inp.datatype} pixel values must lie in 0-255 (the model normalises "
                            f"them itself). Received values from {low:g} to {high:g}.")
    if inp.datatype == "UINT8" and not np.array_equal(array, np.round(array)):
        raise ProtocolError(f"input {name!r}: UINT8 data must be integers 0-255.")
    return array.reshape(shape)


def split_binary_inputs(request: InferenceRequest, tail: bytes | memoryview) -> dict[str, memoryview]:
    """Cut the binary tail into each input's bytes, in request order (the extension's rule)."""
    out: dict[str, memoryview] = {}
    view, pos = memoryview(tail), 0
    for inp in request.inputs:
        size = (inp.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"input {inp.name!r}: binary_data_size must be a byte count. Received {size!r}.")
        if pos + size > len(view):
            raise ProtocolError(
                f"input {inp.name!r}: binary_data_size={size} runs past the end of the body "
                f"({len(view) - pos} bytes left)."
            )
        out[inp.name] = view[pos:pos + size]
        pos += size
    if pos != len(view):
        raise ProtocolError(f"the body has {len(view) - pos} bytes after the last binary input; "
                            "check binary_data_size.")
    return out


def encode_infer_response(
    response: dict[str, Any], arrays: dict[str, np.ndarray], binary: set[str]
) -> tuple[bytes, dict[str, str]]:
    """JSON (or JSON + binary tail) body for an inference response; returns (body, extra headers)."""
    outputs, tail = [], []
    for name, array in arrays.items():
        out = {"name": name, "shape": list(array.shape), "datatype": datatype_of(array.dtype)}
        if name in binary:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            out["data"] = array.ravel().tolist()
        outputs.append(out)
    head = json.dumps({**response, "outputs": outputs}, separators=(",", ":")).encode()
    if not tail:
        return head, {}
    return head + b"".join(tail), {"Inference-Header-Content-Length": str(len(head))}


def requested_outputs(request: InferenceRequest, available: Sequence[str]) -> tuple[list[str], set[str]]:
    """The outputs an infer request asks for, and which of them go back as binary tensor data.

    Without an ``outputs`` list every output is answered, in the artifact's order; with one, the outputs
    it names, in its order (a repeated name once). Binary: all of them with the request parameter
    ``binary_data_output: true`` (except an output whose ``binary_data`` is false), else those whose
    ``binary_data`` is true.

    Raises:
        ProtocolError: an output name the model does not have (400, listing the ones it has).
    """
    asked = request.outputs or []
    for out in asked:
        if out.name not in available:
            raise ProtocolError(f"unknown output {out.name!r}; the model's outputs: {list(available)}."
                                f"{did_you_mean(out.name, available)}")
    names = list(dict.fromkeys(o.name for o in asked)) or list(available)
    flags = {o.name: (o.parameters or {}).get("binary_data") for o in asked}
    if (request.parameters or {}).get("binary_data_output") is True:
        return names, {n for n in names if flags.get(n) is not False}
    return names, {n for n in names if flags.get(n) is True}


def split_binary_response(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Client side: the JSON part and the output arrays of a (possibly binary) inference response."""
    n = int(header_length) if header_length else len(body)
    head = json.loads(body[:n])
    arrays, pos = {}, n
    for out in head.get("outputs", []):
        dtype = DATATYPES[out["datatype"]]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arrays[out["name"]] = np.frombuffer(body[pos:pos + size],
                                                dtype=dtype.newbyteorder("<")).reshape(out["shape"])
            pos += size
        else:
            arrays[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
    return head, arrays
