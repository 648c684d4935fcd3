"""``python -m rag_app``: see :mod:`rag_app.cli`."""

import sys

from rag_app.cli import main

sys.exit(main())
