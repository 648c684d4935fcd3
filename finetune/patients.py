"""Messages the way patients and families write them, for training the re-ranker (``finetune.rerank``).

:func:`finetune.consumer.consumer_question` rewrites a MedQuAD question with a story and a pronoun; it asks
explicitly ("how is it treated?"). Real messages ask less directly ("what should we do now?", "please suggest some
medication"), wrap the question in a story that mentions other things in passing ("she had blood tests last week",
"her grandmother had it too") and often ask for nothing more than information or help. A re-ranker trained on
explicit asks learns that any aspect word in a message is the thing asked. :func:`patient_message` writes messages
with all of that, from a pair's topic and question type alone, and says which question types it asks (the pages of
those types are the answers); a message asking for nothing specific is answered by the topic's overview.

Nothing here reads real consumer questions (the LiveQA messages stay evaluation-only); the phrasings are written for
this module and differ from the benchmarks' (``benchmarks/bench_aspects.py``).
"""

from __future__ import annotations

import random
from typing import Sequence

from finetune.consumer import misspell, topic_name

OVERVIEW = "information"
#: How people ask for each MedQuAD question type, directly and not: "{t}" is the topic or a pronoun, "{p}" the person.
ASKS: dict[str, list[str]] = {
    "information": [
        "what is {t}?", "can you tell me about {t}?", "i would like some information on {t}.", "please send me information about {t}.",
        "where can i read more about {t}?", "i need to learn more about {t}.", "can you explain {t} in plain words?",
        "is {t} serious?", "i don't really understand what {t} is.", "please help me understand {t}.", "what should i know about {t}?",
        "do you have any literature on {t}?", "what does it mean to have {t}?",
    ],
    "treatment": [
        "how is {t} treated?", "what can be done for {t}?", "what treatment is there?", "what medicine can {p} take?",
        "is there a cure?", "what should we do now?", "what is the best thing to do for {p}?", "please suggest some medication.",
        "how do we go about treating {t}?", "is surgery the only option?", "what are the options now?", "can anything help with the pain?",
        "are there any new treatments for {t}?", "how can i get some relief?", "is there anything natural that helps?",
        "which doctor should we see and what will they do?", "is the medicine {p} was given a good choice?",
    ],
    "symptoms": [
        "what are the symptoms?", "what signs should we look out for?", "how do i know if it is {t}?", "could these be signs of {t}?",
        "what does {t} do to a person?", "is it normal to feel this way with {t}?",
    ],
    "causes": [
        "what causes {t}?", "why did {p} get this?", "what could have caused it?", "is it caused by something we did?",
        "where does {t} come from?",
    ],
    "exams and tests": [
        "how is {t} diagnosed?", "what tests should be done?", "how can the doctor be sure?", "is there a blood test for it?",
        "how do they check for {t}?", "should {p} get tested?",
    ],
    "inheritance": [
        "is {t} inherited?", "can it be passed on to our children?", "will my kids get it?", "does it run in families?",
        "is it hereditary?", "should my brothers and sisters be tested?", "what are the chances our baby has it?",
    ],
    "genetic changes": ["what gene is involved?", "what mutation causes {t}?", "is it genetic?", "which chromosome is it on?"],
    "frequency": ["how common is {t}?", "how many people have it?", "is it rare?", "how often does it happen?"],
    "outlook": [
        "what is the prognosis?", "will {p} get better?", "how long can someone live with {t}?", "will it come back?",
        "what can we expect from here?", "does it go away on its own?",
    ],
    "susceptibility": ["who is at risk?", "am i at risk too?", "could i get it as well?", "who usually gets {t}?"],
    "prevention": ["how can it be prevented?", "what can i do to avoid it?", "how do i keep from getting it again?"],
    "research": ["is there any research on {t}?", "are there clinical trials i could join?", "any new studies on {t}?"],
    "complications": ["what complications can it cause?", "can it lead to other problems?"],
    "stages": ["what are the stages of {t}?", "how bad is the stage {p} is in?"],
    "considerations": ["what should i keep in mind?", "is there anything we should be careful about?"],
}
#: Asks that want nothing more specific than help: answered by the topic's overview.
GENERAL = ["can you help?", "any advice?", "please help.", "what should i do?", "i don't know where to start.", "please advise."]
#: Things a story mentions in passing, by the question type they would ask about (not asked here).
IN_PASSING: dict[str, list[str]] = {
    "exams and tests": ["the doctor ran some blood tests.", "{p} had an mri last week.", "they did an ultrasound and x rays."],
    "symptoms": ["{p} has been very tired lately.", "there is some pain and swelling.", "it started with a headache."],
    "inheritance": ["my grandmother had it too.", "nobody else in our family has it.", "it runs in my husband's family."],
    "frequency": ["i heard it is very rare.", "the doctor said it is not common."],
    "treatment": ["{p} has been on medication for a year.", "{p} already had surgery.", "the pills are not helping much."],
    "outlook": ["we are scared.", "i am worried about the future."],
    "causes": ["we don't know how {p} got it."],
}
PEOPLE = ["my mom", "my dad", "my son", "my daughter", "my wife", "my husband", "my sister", "my brother", "my grandson",
          "my aunt", "my friend", "my 3 year old", "my elderly mother", "our baby", "my boyfriend", "my patient"]
STORIES = [
    "{p} was diagnosed with {t} {when}.", "{p} has {t}.", "the doctor thinks {p} has {t}.", "i was diagnosed with {t} {when}.",
    "i have had {t} for years.", "{p} may have {t}, we are waiting for results.", "i'm 52 and was told i have {t}.",
    "{p} is in the hospital with {t}.", "i think i might have {t}.", "we just found out {p} has {t}.",
]
WHEN = ["last week", "two years ago", "recently", "in march", "when she was a baby", "yesterday"]
GREETINGS = ["hi,", "hello,", "dear sir or madam,", "good morning,", "to whom it may concern,", "hello doctor,", "hi there."]
INTROS = ["my name is [NAME].", "i am a 45 year old woman.", "i'm writing for my mother.", "i am a nursing student.", "i live in [LOCATION]."]
CLOSINGS = ["thank you.", "thanks in advance.", "thank you for your time, [NAME]", "any help is appreciated.", "regards, [NAME]"]
SUBJECTS = ["{t}", "question about {t}", "{t} question", "help", "question", "information request", "re: {t}", "need help", "{t} help"]
PRONOUNS = ["it", "this", "this condition", "this disease"]


def _fill(template: str, topic: str, person: str) -> str:
    return template.format(t=topic, p=person)


def patient_message(focus: str, qtype: str, rng: random.Random, other_types: Sequence[str] = ()) -> tuple[str, set[str]]:
    """A patient's message about ``focus`` and the MedQuAD question types it asks.

    Args:
        focus: The pair's topic.
        qtype: The question type it should ask (its page answers it).
        rng: Random source (seeded by the caller).
        other_types: The topic's other question types: one may be asked as well, or mentioned in passing.

    Returns:
        ``(message, asked types)``: usually ``{qtype}``; two types when it asks two things; ``{"information"}`` when it
        asks for nothing specific (then ``qtype`` was the overview).
    """
    topic = topic_name(focus)
    shown = misspell(topic, rng, rate=0.7) if rng.random() < 0.25 else topic
    person = rng.choice(PEOPLE)
    parts: list[str] = []
    if rng.random() < 0.4:
        parts.append(rng.choice(GREETINGS))
    if rng.random() < 0.2:
        parts.append(rng.choice(INTROS))
    story = rng.random() < 0.75
    if story:
        parts.append(_fill(rng.choice(STORIES).replace("{when}", rng.choice(WHEN)), shown, person))
    passing = [t for t in other_types if t in IN_PASSING and t != qtype]
    if passing and rng.random() < 0.5:
        parts.append(_fill(rng.choice(IN_PASSING[rng.choice(passing)]), shown, person))
    ref = rng.choice(PRONOUNS) if story and rng.random() < 0.7 else shown
    asked = {qtype}
    if qtype == OVERVIEW and rng.random() < 0.3:
        parts.append(rng.choice(GENERAL))
    else:
        parts.append(_fill(rng.choice(ASKS.get(qtype) or ASKS[OVERVIEW]), ref, person))
    extra = [t for t in other_types if t in ASKS and t != qtype]
    if extra and rng.random() < 0.15:
        second = rng.choice(extra)
        parts.append(_fill(rng.choice(ASKS[second]), "it", "they"))
        asked.add(second)
    if rng.random() < 0.4:
        parts.append(rng.choice(CLOSINGS))
    text = " ".join(parts)
    if rng.random() < 0.4:
        text = text.replace("?", "")
    if rng.random() < 0.3:
        text = misspell(text, rng, rate=0.15)
    if rng.random() < 0.5:
        text = ". ".join(s[:1].upper() + s[1:] for s in text.split(". "))
    if rng.random() < 0.6:
        text = f"{_fill(rng.choice(SUBJECTS), shown, person)}. {text}"
    return text, asked
