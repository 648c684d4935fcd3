"""``python -m rag_app.index``: build or update the index of the configured corpus (``python -m rag_app index``).

    python -m rag_app.index                      # corpus from MEDQA_CORPUS (default data/medquad)
    python -m rag_app.index --corpus ../shared/data/medquad --storage-dir storage --rebuild
"""

import sys

from rag_app.cli import main

sys.exit(main(["index", *sys.argv[1:]]))
