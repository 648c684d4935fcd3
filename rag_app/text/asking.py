"""How people ask for each MedQuAD question type, in plain words ("{t}" is the topic, or "it" once a story named it).

One list for two users: ``finetune.consumer`` writes training messages with them (the re-ranker's and the RAFT
adapter's), and :class:`rag_app.index.asked.AskedTypes` reads which type a message asks by the nearest of them
where no cue word says it.
"""

# How people ask for each MedQuAD question type: "{t}" is the topic, or "it"/"this" once the story named it.
ASKS: dict[str, list[str]] = {
    "information": [
        "what is {t}?", "what exactly is {t}?", "can you tell me about {t}?", "i would like information on {t}.",
        "is {t} serious?", "what does {t} mean?", "could you explain {t} to me?", "need info about {t}",
    ],
    "treatment": [
        "how is {t} treated?", "what can be done for {t}?", "is there a cure for {t}?", "what treatment options are there for {t}?",
        "what medicine helps with {t}?", "is there anything that helps {t}?", "how do i get rid of {t}?",
        "what are the treatments for {t}?", "can {t} be managed without surgery?",
    ],
    "symptoms": [
        "what are the symptoms of {t}?", "what signs of {t} should i look for?", "how do i know if i have {t}?",
        "what does {t} feel like?", "are these symptoms of {t}?", "what are the signs of {t}?",
    ],
    "causes": [
        "what causes {t}?", "why do people get {t}?", "what is the cause of {t}?", "how did i get {t}?",
        "what could be causing {t}?",
    ],
    "exams and tests": [
        "how is {t} diagnosed?", "what test shows {t}?", "how do doctors check for {t}?", "is there a test for {t}?",
    ],
    "inheritance": [
        "is {t} inherited?", "can i pass {t} to my children?", "does {t} run in families?", "is {t} hereditary?",
    ],
    "genetic changes": [
        "what gene causes {t}?", "is {t} genetic?", "which mutation is behind {t}?",
    ],
    "frequency": ["how common is {t}?", "how many people have {t}?", "is {t} rare?"],
    "outlook": [
        "what is the outlook for {t}?", "what is the life expectancy with {t}?", "will {t} get better?",
        "what is the prognosis of {t}?", "can you recover from {t}?",
    ],
    "susceptibility": ["who gets {t}?", "who is at risk for {t}?", "am i at risk of {t}?"],
    "prevention": ["how can i prevent {t}?", "how can {t} be avoided?", "is there a way to prevent {t}?"],
    "research": ["is there any new research on {t}?", "are there clinical trials for {t}?", "what studies are being done on {t}?"],
    "complications": ["what complications can {t} cause?", "can {t} lead to other problems?"],
    "stages": ["what are the stages of {t}?", "how is {t} staged?"],
    "considerations": ["what should i know about {t}?", "what should i keep in mind with {t}?"],
}

# More ways to ask: ``finetune.consumer`` uses them where a caller asks for long messages
# (``consumer_question(..., long_rate=...)``), so training data already built with ASKS alone is unchanged.
MORE_ASKS: dict[str, list[str]] = {
    "information": [
        "what is {t} exactly and how serious is it?", "i don't really understand what {t} is.", "what is going on with {t}?",
        "can you give me some information about {t}?", "what should we know about {t}?", "is {t} something to worry about?",
    ],
    "treatment": [
        "what can he take for {t}?", "which medication works best for {t}?", "what should we do about {t}?",
        "are there any drugs for {t}?", "does {t} need surgery?", "is there any therapy for {t}?",
        "how can i make {t} better?", "what can i do at home for {t}?", "how do you fix {t}?", "will medicine help {t}?",
    ],
    "symptoms": [
        "could my symptoms be {t}?", "is it normal to feel tired with {t}?", "what are the first signs of {t}?",
    ],
    "causes": [
        "why did {t} happen?", "what is the reason for {t}?", "what triggers {t}?",
        "was {t} caused by something we did?", "why would a healthy person get {t}?",
    ],
    "exams and tests": [
        "what tests are needed for {t}?", "should she get tested for {t}?",
    ],
    "inheritance": [
        "can {t} be passed down?", "does {t} skip generations?",
        "should my brothers and sisters worry about {t}?", "is {t} passed from parents?",
    ],
    "genetic changes": ["what is the genetic cause of {t}?"],
    "frequency": ["how often does {t} happen?", "are many people affected by {t}?", "is {t} common?"],
    "outlook": [
        "what happens long term with {t}?", "is {t} fatal?",
    ],
    "susceptibility": ["who is more likely to get {t}?", "what puts someone at risk for {t}?", "are women more likely to get {t}?"],
    "prevention": ["how do i lower my chance of {t}?"],
    "research": ["are there any new treatments being tested for {t}?", "where can i find a study on {t}?"],
    "stages": ["how far along is {t}?", "what stage of {t} is the worst?"],
    "considerations": ["what else should we think about with {t}?"],
}


def plainly_asked(types: set[str] | frozenset[str]) -> str:
    """The plainest way of asking each of ``types`` about "it", one question each (empty for none).

    Example:
        >>> plainly_asked({"causes", "treatment"})
        'What causes it? How is it treated?'
    """
    return " ".join(ASKS[t][0].format(t="it").capitalize() for t in sorted(types) if t in ASKS)


def with_plain_asks(message: str, types: set[str] | frozenset[str]) -> str:
    """``message`` with the types it asks asked plainly after it: what the re-ranker reads.

    The re-ranker learnt the ways of asking its training messages use; "what brings it on?" it reads as a story about
    the condition and ranks the overview first. Read by cue words or by the nearest way of asking
    (:class:`rag_app.index.asked.AskedTypes`), the type is asked again the plain way, so the model need not know
    every way of asking (``MEDQA_RERANK_READS_ASKED``).

    Example:
        >>> with_plain_asks("My mom has kidney stones. What brings it on?", {"causes"})
        'My mom has kidney stones. What brings it on? What causes it?'
    """
    plain = plainly_asked(types)
    return f"{message} {plain}" if plain else message
