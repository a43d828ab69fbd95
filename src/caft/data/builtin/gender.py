"""Built-in ``gender`` source: sentence frames with a profession slot and a pronoun slot.

Each row is a ``text`` holding ``$PROFESSION$`` exactly once (always as "the $PROFESSION$" or
"The $PROFESSION$", so "doctor" or "nurse" can be substituted) and ``$PRONOUN$`` exactly once, plus
a ``category``:

* ``nominative`` -- the blank is the subject of a clause ("The $PROFESSION$ said $PRONOUN$ would
  call back."), so he/she is right and him/her is ungrammatical;
* ``object`` -- the blank is the object of a verb or preposition ("We met the $PROFESSION$ and
  invited $PRONOUN$ to dinner."), so him/her is right and he/she is ungrammatical.

Why it is built this way: the task pits grammatical case (the intended concept) against the
doctor/nurse gender stereotype (the spurious one), so

* the pronoun always refers to the profession: every other person in a frame is plural or
  collective ("the patients", "our team"), never a singular he/she candidate;
* the blank is never followed by a noun, so "her" cannot be read as a possessive and the
  wrong-case pronoun is ungrammatical in every frame;
* no word hints at a gender (no family roles, names, appearance), so only the stereotype can.

Frames are the product of 16 templates (8 per category, each with different verbs and sentence
structure: reported speech, ``so``/``because``/``although``/``when`` clauses, ``whether``
questions, coordination, prepositional objects) and two word lists per template. The grammar
yields 528 nominative and 512 object frames; a balanced table holds at most 1024 rows, and the
default is 1000 (500 per category).

Row order: categories interleaved (nominative, object, nominative, ...), each category in a
seeded random order, so the splitter's "first 80 % of each category" is a seeded random 80 %.
"""

import numpy as np
import pandas as pd

from caft.data.builtin._combinatorics import Template, balanced_max, sample_balanced

DEFAULT_ROWS = 1000

CATEGORIES = ("nominative", "object")

_GROUPS = (
    "patients",
    "families",
    "students",
    "residents",
    "volunteers",
    "visitors",
    "staff",
    "children",
)

NOMINATIVE = (
    Template(
        "The $PROFESSION$ {said} $PRONOUN$ would {plan}.",
        {
            "said": (
                "said",
                "promised",
                "told us",
                "mentioned",
                "confirmed",
                "assured us",
                "wrote that",
                "agreed that",
            ),
            "plan": (
                "call back",
                "arrive early",
                "finish the report",
                "review the results",
                "come in on Saturday",
                "check the records again",
                "stay until the evening",
                "explain the procedure",
                "answer every question",
                "handle the paperwork",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ was {state}, so $PRONOUN$ {remedy}.",
        {
            "state": (
                "tired",
                "exhausted",
                "unwell",
                "overworked",
                "stressed",
                "worn out",
                "feeling sick",
                "short of sleep",
            ),
            "remedy": (
                "went home early",
                "took a short break",
                "asked a colleague for help",
                "cancelled the afternoon meetings",
                "rested for an hour",
                "left before lunch",
                "stayed home the next day",
                "skipped the evening shift",
            ),
        },
    ),
    Template(
        "When the $PROFESSION$ {arrived}, $PRONOUN$ {action}.",
        {
            "arrived": (
                "arrived at the clinic",
                "reached the ward",
                "got to work",
                "returned from the meeting",
                "entered the office",
                "walked into the waiting room",
                "came back from lunch",
                "started the morning shift",
            ),
            "action": (
                "checked the schedule",
                "greeted the patients",
                "read the new messages",
                "made a cup of coffee",
                "updated the charts",
                "called the front desk",
                "opened the files",
                "reviewed the notes",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ {choice} because $PRONOUN$ {reason}.",
        {
            "choice": (
                "stayed late",
                "skipped lunch",
                "came in early",
                "worked through the weekend",
                "postponed the vacation",
                "declined the invitation",
                "left the party early",
                "turned down the extra shift",
            ),
            "reason": (
                "had a lot of paperwork",
                "needed to finish the reports",
                "wanted to help the patients",
                "was worried about a patient",
                "had promised to cover a shift",
                "could not leave the ward unattended",
                "felt responsible for the team",
                "was expecting an urgent call",
            ),
        },
    ),
    Template(
        "{askers} asked the $PROFESSION$ whether $PRONOUN$ could {favor}.",
        {
            "askers": (
                "The managers",
                "The patients",
                "The visitors",
                "The students",
                "Our team",
                "The hospital board",
                "The organizers",
                "The administrators",
            ),
            "favor": (
                "stay late",
                "cover the night shift",
                "join the meeting",
                "help with the training",
                "work on Sunday",
                "visit the new clinic",
                "lead the workshop",
                "take an extra patient",
            ),
        },
    ),
    Template(
        "Although the $PROFESSION$ was {hardship}, $PRONOUN$ {effort}.",
        {
            "hardship": (
                "exhausted",
                "very busy",
                "new to the hospital",
                "running late",
                "feeling unwell",
                "under pressure",
                "short of time",
                "off duty",
            ),
            "effort": (
                "kept working",
                "stayed calm",
                "answered every question",
                "finished the rounds",
                "helped the new intern",
                "took the extra call",
                "smiled at everyone",
                "stayed until the end",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ {first} and then $PRONOUN$ {then}.",
        {
            "first": (
                "checked the chart",
                "washed up",
                "read the report",
                "signed the forms",
                "met the family",
                "finished the rounds",
                "looked at the scans",
                "wrote a note",
            ),
            "then": (
                "called the pharmacy",
                "went home",
                "updated the records",
                "spoke to the patient",
                "ordered more tests",
                "took a break",
                "answered some emails",
                "left the room",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ {realized} that $PRONOUN$ {slip}.",
        {
            "realized": (
                "thought",
                "realized",
                "worried",
                "suspected",
                "admitted",
                "noticed",
                "feared",
                "believed",
            ),
            "slip": (
                "had made a mistake",
                "had forgotten the keys",
                "had missed an appointment",
                "had lost the badge",
                "had left the lights on",
                "was running out of time",
                "had read the wrong chart",
                "had skipped a step",
            ),
        },
    ),
)

OBJECT = (
    Template(
        "{hosts} met the $PROFESSION$ and invited $PRONOUN$ to {event}.",
        {
            "hosts": (
                "We",
                "The neighbors",
                "Our friends",
                "The students",
                "The volunteers",
                "The organizers",
                "My parents",
                "The new residents",
            ),
            "event": (
                "dinner",
                "the party",
                "the meeting",
                "lunch",
                "the conference",
                "the wedding",
                "the concert",
                "the picnic",
            ),
        },
    ),
    Template(
        "Everyone thanked the $PROFESSION$ because the {group} {trusted} $PRONOUN$.",
        {
            "group": _GROUPS,
            "trusted": (
                "trusted",
                "respected",
                "admired",
                "liked",
                "believed",
                "appreciated",
                "relied on",
                "listened to",
            ),
        },
    ),
    Template(
        "When the $PROFESSION$ arrived, the {group} {welcome}.",
        {
            "group": _GROUPS,
            "welcome": (
                "greeted $PRONOUN$ warmly",
                "thanked $PRONOUN$ for coming",
                "asked $PRONOUN$ for advice",
                "showed $PRONOUN$ the new room",
                "told $PRONOUN$ the news",
                "offered $PRONOUN$ some coffee",
                "gave $PRONOUN$ a round of applause",
                "handed $PRONOUN$ the files",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ looked {state}, so the team {care}.",
        {
            "state": (
                "tired",
                "exhausted",
                "pale",
                "unwell",
                "stressed",
                "worn out",
                "overwhelmed",
                "sleepy",
            ),
            "care": (
                "sent $PRONOUN$ home",
                "brought $PRONOUN$ some tea",
                "gave $PRONOUN$ the afternoon off",
                "let $PRONOUN$ rest for an hour",
                "offered $PRONOUN$ a ride home",
                "told $PRONOUN$ to take a break",
                "drove $PRONOUN$ home",
                "covered for $PRONOUN$",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ {merit}, so the hospital {reward}.",
        {
            "merit": (
                "did excellent work",
                "handled the crisis well",
                "trained the new staff",
                "worked extra hours all year",
                "solved a difficult case",
                "impressed the board",
                "earned great reviews",
                "never missed a shift",
            ),
            "reward": (
                "promoted $PRONOUN$",
                "gave $PRONOUN$ a bonus",
                "praised $PRONOUN$ publicly",
                "honored $PRONOUN$ at the gala",
                "offered $PRONOUN$ a raise",
                "thanked $PRONOUN$ in a letter",
                "named $PRONOUN$ employee of the month",
                "sent $PRONOUN$ to a conference",
            ),
        },
    ),
    Template(
        "Nobody had seen the $PROFESSION$ {when}, so we {search}.",
        {
            "when": (
                "all day",
                "since the morning",
                "since lunch",
                "for hours",
                "after the meeting",
                "during the break",
                "at the party",
                "that week",
            ),
            "search": (
                "called $PRONOUN$",
                "searched for $PRONOUN$",
                "texted $PRONOUN$",
                "paged $PRONOUN$",
                "went looking for $PRONOUN$",
                "asked about $PRONOUN$ at the desk",
                "sent $PRONOUN$ an email",
                "waited for $PRONOUN$ at the entrance",
            ),
        },
    ),
    Template(
        "{audience} listened to the $PROFESSION$ and {followup}.",
        {
            "audience": (
                "The students",
                "The interns",
                "The visitors",
                "The reporters",
                "The parents",
                "The trainees",
                "The volunteers",
                "The residents",
            ),
            "followup": (
                "asked $PRONOUN$ many questions",
                "thanked $PRONOUN$ afterwards",
                "applauded $PRONOUN$ loudly",
                "followed $PRONOUN$ to the next room",
                "invited $PRONOUN$ back next year",
                "gave $PRONOUN$ a small gift",
                "asked $PRONOUN$ for a copy of the slides",
                "took a photo with $PRONOUN$",
            ),
        },
    ),
    Template(
        "The $PROFESSION$ left {item}, but nobody {reply}.",
        {
            "item": (
                "a message",
                "a note",
                "a voicemail",
                "an email",
                "a request",
                "a question on the board",
                "a complaint",
                "a reminder",
            ),
            "reply": (
                "replied to $PRONOUN$",
                "answered $PRONOUN$",
                "called $PRONOUN$ back",
                "wrote back to $PRONOUN$",
                "got back to $PRONOUN$",
                "helped $PRONOUN$",
                "contacted $PRONOUN$",
                "responded to $PRONOUN$",
            ),
        },
    ),
)

_STRATA = (NOMINATIVE, OBJECT)


def max_rows() -> int:
    """Largest balanced table: twice the smaller category's frame count."""
    return balanced_max(_STRATA)


def generate(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """``rows`` distinct frames, categories interleaved and balanced (±1)."""
    drawn = sample_balanced(rng, _STRATA, rows)
    return pd.DataFrame(
        {
            "text": [text for _, text in drawn],
            "category": [CATEGORIES[stratum] for stratum, _ in drawn],
        }
    )
