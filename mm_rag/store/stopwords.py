"""Stop words: the function words of each language the keyword index knows, as data.

A query word made only of these creates no keyword match: "when do the fireworks start?" searches for
"fireworks" and "start", not for every record holding "the". The lists are short on purpose: function words
only (articles, pronouns, auxiliaries, prepositions, conjunctions, question words), never content words that
a user may mean ("long", "first", "new" stay searchable). Words common in one collection but not in the
language are caught by document frequency instead (`mm_rag.store.lexical`).
"""

from __future__ import annotations

# ruff: noqa: SIM905 -- word lists read best as running text

STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """
        a about above after again against all am an and any are as at be because been before being below
        between both but by can could did do does doing down during each few for from further had has have
        having he her here hers herself him himself his how i if in into is it its itself just me more most
        my myself no nor not now of off on once only or other our ours ourselves out over own same she should
        so some such than that the their theirs them themselves then there these they this those through to
        too under until up very was we were what when where which while who whom why will with would you your
        yours yourself yourselves s t d ll m re ve don doesn didn isn aren wasn weren won wouldn shouldn
        couldn hasn haven hadn let please
        """.split()
    ),
    "de": frozenset(
        """
        der die das den dem des ein eine einer eines einem einen und oder aber auch als am an auf aus bei bin
        bis bist da damit dann dass du durch er es ist sind sein seine ihr ihre ich im in mit nach nicht noch
        nur ob so sie über um unter von vor war waren was wann warum wer wie wo wir zu zum zur sich man
        mich mir dich dir uns euch hat haben habe wird werden wurde kann können soll sollen
        """.split()
    ),
    "fr": frozenset(
        """
        le la les un une des du de d l et ou mais au aux ce ces cette cet il elle ils elles je tu nous vous on
        est sont être a ont avoir était dans par pour sur avec sans sous que qui quoi quand comment où pourquoi
        ne pas plus se sa son ses leur leurs mon ma mes ton ta tes y en lui me te
        """.split()
    ),
    "es": frozenset(
        """
        el la los las un una unos unas y o pero de del al a en con sin por para que qué quien quién cuando
        cuándo como cómo donde dónde es son está están ser estar fue era se su sus lo le les me te nos mi mis
        tu tus muy más ya hay ha han
        """.split()
    ),
}
DEFAULT_LANGUAGES = ("en",)


def stop_words(languages: tuple[str, ...]) -> frozenset[str]:
    """The union of the stop words of `languages` (codes of `STOP_WORDS`), folded like the index folds words."""
    from mm_rag.store.lexical import fold

    return frozenset(fold(word) for language in languages for word in STOP_WORDS[language])
