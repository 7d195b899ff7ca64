"""The ``joblib`` codec: any other picklable object (scikit-learn estimators...), pickled by
joblib (docs/api.md, "Models"). Reading unpickles, which runs code from the file:
``runs_code`` is True and the store decides trust before ``permit()`` returns. The bytes are
read once, hashed, and unpickled from that same buffer."""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.errors import IntegrityError, InvalidInput
from app.formats.modelcodecs.codec import Recorded, Written
from app.formats.modelcodecs.hashing import class_path, read_verified, write_hashed

SUFFIX = "joblib"


class JoblibCodec:
    """``.joblib``: whatever pickles; picked by ``format=None`` when no tensor format fits."""

    suffix = SUFFIX
    runs_code = True
    precedence: int | None = 90
    chunked = False

    def can_save(self, model: object) -> bool:
        return model is not None  # whether it pickles shows when writing (InvalidInput)

    def write(self, path: Path, model: Any) -> Written:
        """Pickle ``model`` with joblib to ``path``; ``InvalidInput`` if it cannot be pickled."""
        import joblib

        versions = {"joblib": str(joblib.__version__)}
        top = type(model).__module__.split(".")[0]
        module = sys.modules.get(top)
        if module is not None and isinstance(getattr(module, "__version__", None), str):
            versions[top] = module.__version__
        try:
            digest, size = write_hashed(path, lambda out: joblib.dump(model, out))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidInput(
                f"model: cannot be pickled ({str(exc)[:160]})", argument="model"
            ) from None
        return Written(digest, size, class_path(model), None, versions)

    def read(self, path: Path, recorded: Recorded, *, into: Any, permit: Callable[[], None]) -> Any:
        if into is not None:
            raise InvalidInput(
                f"into: {path} is a .joblib object, not torch weights", argument="into"
            )
        data = read_verified(path, recorded.sha256, recorded.size_bytes)
        permit()  # unpickling runs code from the file: trust comes first
        import joblib

        try:
            return joblib.load(io.BytesIO(data))
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise IntegrityError(
                f"{path}: not a readable .joblib file ({str(exc)[:160]})"
            ) from None


CODEC = JoblibCodec()
