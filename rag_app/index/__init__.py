"""The index layer: the Chroma index of NIH QA pairs, built incrementally and opened for search.

``chroma`` (access to the collections and their manifest), ``sources`` (the corpus reader), ``build`` (building and
updating), ``background`` (a build the chat runs beside it), ``store`` (the opened index read into memory),
``topics`` (the indexed topic names, and the question types cue words ask for) and ``asked`` (the question types asked
without cue words, by the nearest plain way of asking). ``python -m rag_app.index`` builds the configured corpus.
"""
