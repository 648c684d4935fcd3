"""The index layer: the Chroma index of NIH QA pairs, built incrementally and opened for search.

``chroma`` (access to the collections and their manifest), ``sources`` (the corpus reader), ``build`` (building and
updating), ``background`` (a build the chat runs beside it), ``store`` (the opened index read into memory) and
``topics`` (the indexed topic names and question types). ``python -m rag_app.index`` builds the configured corpus.
"""
