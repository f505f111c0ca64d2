"""`python -m soundmond.workbench.bench [full|tiny]` warms the AST export cache
(the random checkpoint and its four exports)."""

from __future__ import annotations

import logging
import sys

from soundmond.workbench.bench.artefacts import ensure_ast_models

if __name__ == "__main__":  # pragma: no cover - warms the AST export cache
    logging.basicConfig(level=logging.INFO)
    ensure_ast_models(sys.argv[1] if len(sys.argv) > 1 else "full")
