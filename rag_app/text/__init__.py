"""The text layer: pure functions over strings, no models.

``words`` (the one sentence splitter and word tokenizer), ``prompts`` (the prompt format shared with training),
``repetition`` (answers that never loop), ``citations`` (citations that point where their words came from),
``openings`` (how an answer opens with its source), ``headings`` (section headings glued into NIH pages) and ``asking``
(the plain ways people ask for each question type).
"""
