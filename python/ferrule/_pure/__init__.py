"""Pure-Python twins of the native kernels in ``ferrule._native``.

Each name here has the same signature and produces the same output, byte for byte, as its native
twin. Type checkers and readers should treat this package as the documented source of truth; the
native module is an accelerated copy. Only ``ferrule.backend`` chooses between them.
"""

from .answer import answer_to_openai, answer_usage
from .chat_request import ChatRequests
from .compress import Compressor
from .meter import AllowanceMeter, rate_headers
from .responses_stream import ResponsesStreamEncoder
from .sse import SseDecoder, SseError
from .stream import StreamTranslator

__all__ = [
    "AllowanceMeter",
    "ChatRequests",
    "Compressor",
    "ResponsesStreamEncoder",
    "SseDecoder",
    "SseError",
    "StreamTranslator",
    "answer_to_openai",
    "answer_usage",
    "rate_headers",
]
