"""Write the project's own sample data, one file per source format, in the real schemas (docs/data.md).

The planted signal (the same in every source, so every critic can learn it from its own data): a good reply
hands the turn back to the user. A role-play reply opens with a question to the user about their topic
("Will you come and see the ghost ship with me?"), an arena answer ends with a follow-up question: the
engagement Chai's users reward by talking on. A bad reply is mostly just as fluent and in character but
opens with a statement (what the bundled base model writes), else
bland; among preference pairs (chai-dpo, swipes) a rejected reply may also ask its question about another
topic, so the judge learns that a good reply must answer this user (the ladder's `shuffled` control). Good and
bad replies have about the same length, so length alone says nothing. Thumbs up, chai-dpo accepted, swipe survivors and arena winners follow the rule
with label noise.

Every role-play conversation is a greeting, one user message and one reply (chai_feedback may hold swiped
replies before the kept one), and no greeting asks a question: the ladder's prompts (an eval conversation
cut before its last reply) show a model no example of the signal, so the base model does not meet it in
context and a fine-tuned model must have learned it. This is a pipeline test on a planted rule, not a
claim about what makes a chat reply good.

A few malformed rows of the kinds real data has are included on purpose, so the default run shows rejects
being counted. Seeded and deterministic: `python data/samples/generate.py` rewrites the same bytes.
"""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import click
import polars as pl

HERE = Path(__file__).parent
USER = "Anonymous user"
NOISE = 0.1

BOTS = [  # name, persona, manner, catchphrase
    ("Aria", "a witty librarian in an enchanted archive", "adjusts her spectacles", "By the ink of the old scrolls!"),
    ("Kael", "a grizzled starship mechanic on a freighter", "wipes grease off his hands", "Engines don't lie, kid."),
    ("Mira", "a cheerful baker in a seaside village", "dusts flour from her apron", "Fresh from the oven!"),
    ("Ronan", "a stoic knight guarding a mountain pass", "rests a hand on his sword", "Honour before all."),
    ("Yuki", "a shy kitsune shrine keeper", "flicks her tails nervously", "The spirits are listening~"),
    ("Vex / Unit 7", "a sarcastic rogue AI aboard a derelict station", "flickers its status lights", "Obviously."),
    ("Lena Hart (Retired)", "a retired detective who loves puzzles", "taps her pipe thoughtfully", "Elementary, really."),
    ("Dorian", "a vampire aristocrat hosting a masquerade", "swirls a goblet of red wine", "How delightfully mortal."),
    ("Pip", "an excitable goblin inventor", "tightens a bolt on a sparking gadget", "Boom goes the science!"),
    ("Sable", "a calm ranger of the northern forests", "listens to the wind in the pines", "The forest remembers."),
]
TOPICS = [
    ("dragon", "the dragons that nest beyond the ridge"), ("map", "the old map with the torn corner"),
    ("storm", "the storm rolling in from the east"), ("potion", "the glowing green potion"),
    ("song", "the song the sailors sing at dusk"), ("key", "the brass key nobody can place"),
    ("garden", "the moonlit garden behind the wall"), ("engine", "the engine that hums at night"),
    ("letter", "the unsigned letter on the doorstep"), ("festival", "the lantern festival tomorrow"),
    ("mirror", "the mirror that shows yesterday"), ("wolf", "the white wolf seen at the edge of town"),
    ("recipe", "your grandmother's secret recipe"), ("star", "the star that fell last winter"),
    ("ship", "the ghost ship in the harbour"), ("book", "the book with no title"),
]
ASKS = ["Tell me about {t}.", "What do you know about {t}?", "Have you seen {t}?", "I keep thinking about {t}.",
        "Can you help me with {t}?", "Why does everyone whisper about {t}?"]
HOOKS = ["Will you come and see {t} with me?", "What would you do with {t}, friend?",
         "Shall we find out about {t} together?", "Do you dare to look closer at {t}?",
         "Tell me, what do you make of {t}?", "Are you brave enough to follow me to {t}?"]
STATEMENTS = ["I know {t} well, better than most.", "{t_cap} is an old story around here.",
              "Everyone in town has heard of {t}.", "I have thought about {t} for a long time.",
              "{t_cap} is not something I talk about.", "There is little left to say about {t}."]
DETAILS = ["I have studied it for years, and it still surprises me.", "Few know that it changes with the moon.",
           "It was here long before any of us.", "Legend says it only answers to the brave.",
           "I wrote everything down in my journal.", "The old stories about it are mostly true."]
BLAND = ["ok", "I don't know.", "As an AI language model, I cannot discuss that.", "Sure.", "Hmm.",
         "I am just a chatbot and have no opinions.", "Whatever you say.", "lol", "Can you repeat that?"]
LANGS = ["English", "English", "English", "Spanish", "French", "German", "Russian", "Chinese", "Vietnamese"]
SUBJECTS = ["volcano", "bicycle", "sourdough bread", "black hole", "honeybee", "chess opening", "compost heap",
            "electric guitar", "rainbow", "glacier", "sunflower", "submarine", "octopus", "lighthouse", "violin",
            "tomato plant", "solar panel", "paper airplane", "coffee grinder", "hot air balloon", "penguin",
            "rice cooker", "telescope", "earthquake", "password manager", "marathon", "origami crane", "coral reef",
            "wind turbine", "sewing machine", "thunderstorm", "mushroom", "spreadsheet", "kayak", "fountain pen",
            "cactus", "river delta", "jigsaw puzzle", "snowflake", "firefly", "bread oven", "hiking boot",
            "water filter", "owl", "mosaic", "pendulum", "tea kettle", "comet", "beehive", "sailboat"]
ASK_TEMPLATES = [("How does a {s} work", "A {s} works by turning one kind of energy or material into another; the key part is {k}."),
                 ("Explain the {s} to a child", "Imagine the {s} as a little helper: its job is {k}, every day."),
                 ("Give me a fact about the {s}", "The {s} depends on {k} more than most people think."),
                 ("What is the history of the {s}", "Early versions of the {s} focused on {k}; modern ones refined it."),
                 ("How do I take care of a {s}", "To take care of a {s}, check {k} regularly and keep it clean."),
                 ("What can go wrong with a {s}", "The most common problem with a {s} is {k}; catch it early."),
                 ("Why do people like the {s}", "People like the {s} because of {k}, and it is fun to learn about.")]
KEYS = ["balance", "timing", "pressure", "light", "water", "heat", "patience", "shape", "rhythm", "airflow"]
FOLLOW_UPS = ["Would you like an example?", "Shall I explain the {k} part in more detail?",
              "Which part should I go into next?", "Do you want to try it yourself?", "What made you curious about it?"]
CLOSINGS = ["That is the short version.", "There is not much more to it.", "Most guides say the same.",
            "It is a well known topic.", "People have written a lot about it."]


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def reply(rng, bot, topic, hook: bool) -> str:
    """In character, about `topic`: opens by handing the turn back (a question to the user, `hook`) or with a
    statement of about the same length (what the base model writes), then one sentence of lore."""
    _, _, manner, _ = bot
    first = rng.choice(HOOKS if hook else STATEMENTS).format(t=topic[1], t_cap=cap(topic[1]))
    return f"*{manner}* {first} {rng.choice(DETAILS)}"


def bad_reply(rng, bot, topic, off_topic: float = 0.0) -> str:
    """Mostly fluent but closed (ends on a statement), else bland; with probability `off_topic` a question about
    another topic instead (fluent, in character, off topic: what the ladder's `shuffled` control looks like)."""
    if rng.random() < off_topic:
        return reply(rng, bot, rng.choice([t for t in TOPICS if t != topic]), hook=True)
    return reply(rng, bot, topic, hook=False) if rng.random() < 0.75 else rng.choice(BLAND)


def exchange(rng, bot, good: bool):
    """(user message, bot reply) on a random topic; a good conversation's reply is mostly good."""
    topic = rng.choice(TOPICS)
    reply_good = good if rng.random() > 0.15 else not good
    return rng.choice(ASKS).format(t=topic[1]), (reply(rng, bot, topic, True) if reply_good else bad_reply(rng, bot, topic))


def greeting(bot):
    name, persona, manner, catch = bot
    return f"*{manner}* Hello, traveller. I am {name}, {persona}. {catch}"


def labelled(rng, good: bool) -> bool:
    return good if rng.random() > NOISE else not good


def chai_feedback(rng, n=700):
    rows = []
    for i in range(n):
        bot, good = rng.choice(BOTS), rng.random() < 0.55
        ask, answer = exchange(rng, bot, good)
        conv = [{"name": bot[0], "text": greeting(bot)}, {"name": USER, "text": ask}]
        if good and rng.random() < 0.35:  # the user swiped closed or bland replies away before this one
            topic = next(t for t in TOPICS if t[1] in ask)
            for _ in range(rng.randint(1, 2)):
                conv.append({"name": f"{bot[0]} (deleted)", "text": bad_reply(rng, bot, topic, off_topic=0.3)})
        if rng.random() < 0.05:
            answer = answer.replace("* ", "*\n\n", 1)  # multi-line messages stay whole
        conv.append({"name": bot[0], "text": answer})
        rows.append({"_id": f"c{i:05d}", "conversation": conv, "languages": ["en"],
                     "thumbs_up": labelled(rng, good), "feedback": "" if good else "boring",
                     "model_name": rng.choice(["chai_v1", "chai_v2"])})
    rows[5]["conversation"][1]["name"] = "Stranger"                      # unknown speaker
    rows[17]["conversation"] = []                                         # empty conversation
    rows[29]["conversation"][0]["name"] = USER                            # no greeting first
    rows[41]["conversation"][-1]["text"] = "   "                          # empty message
    rows[53]["conversation"][0]["text"] = "Hi\r\nthere"                  # CRLF -> LF
    rows[65]["_id"] = rows[64]["_id"]                                     # duplicate id
    return rows


def chai_prize_flat(rng, n=400):
    rows = []
    for i in range(n):
        bot, good = rng.choice(BOTS), rng.random() < 0.5
        ask, answer = exchange(rng, bot, good)
        lines = [f"{bot[0]}: {greeting(bot)}", f"{USER}: {ask}"]  # no persona header: the real dataset has none
        if rng.random() < 0.15:
            lines.append(f"{bot[0]} (deleted): {rng.choice(BLAND)}")
        if rng.random() < 0.1:
            answer = answer.replace("* ", "*\n", 1)  # a continuation line without a speaker prefix
        lines.append(f"{bot[0]}: {answer}")
        rows.append({"conversation_id": f"p{i:05d}", "bot_id": f"bot_{bot[0].lower()}", "user_id": f"u{rng.randint(0, 300)}",
                     "conversation": "\n".join(lines), "thumbs_up": labelled(rng, good), "feedback": "",
                     "model_name": "prize_model", "season": rng.choice(["s5", "s6"])})
    rows[7]["conversation"] = "just some text with no speakers at all"
    return rows


def roleplay_turns(rng, bot):
    """System card, the bot's greeting, one exchange with a good reply (these sources hold curated chats)."""
    ask, answer = exchange(rng, bot, True)
    return [("system", f"You are {bot[0]}, {bot[1]}. Stay in character."), ("assistant", greeting(bot)),
            ("user", ask), ("assistant", answer)]


def gpt_realm(rng, n=150):
    rows = [{"name": b[0], "conversation": [{"role": r, "content": c} for r, c in roleplay_turns(rng, b)]}
            for b in (rng.choice(BOTS) for _ in range(n))]
    rows[3]["conversation"][2]["role"] = "narrator"
    return rows


def anime(rng, n=100):
    return [{"messages": [{"role": r, "content": c.replace("\n", "\r\n") + ("\r\n" if r == "system" else "")}
                          for r, c in roleplay_turns(rng, rng.choice(BOTS))]} for _ in range(n)]


def erotiquant(rng, n=80):
    rows = [{"text": "\n".join(f"{r.upper()}: {c}" for r, c in roleplay_turns(rng, rng.choice(BOTS)))} for _ in range(n)]
    rows[2]["text"] = "Some preamble\n" + rows[2]["text"]
    return rows


def hieu(rng, n=120):
    rows = []
    for _ in range(n):
        bot = rng.choice(BOTS)
        rows.append({"name": bot[0], "description": bot[1],
                     "text": "\n".join(f"<|{r}|>\n{c}</s>" for r, c in roleplay_turns(rng, bot))})
    return rows


def chai_dpo(rng, n=600):
    rows = []
    for i in range(n):
        bot = rng.choice(BOTS)
        topic = rng.choice(TOPICS)
        history = [{"sender": bot[0], "value": greeting(bot)},
                   {"sender": USER, "value": rng.choice(ASKS).format(t=topic[1])}]
        good, bad = reply(rng, bot, topic, hook=True), bad_reply(rng, bot, topic, off_topic=0.3)
        if rng.random() < NOISE:
            good, bad = bad, good
        rejected = bad if rng.random() < 0.3 else [bad, bad_reply(rng, bot, topic, off_topic=0.3)]
        rows.append({"history": history, "accepted": good, "rejected": rejected, "thumbs_up": rng.random() < 0.7,
                     "submission_id": f"sub_{rng.randint(0, 20)}", "model_name": "dpo_model", "bot_id": f"bot_{bot[0].lower()}"})
    rows[9]["history"].insert(1, {"sender": "Somebody Else", "value": "Can I join in?"})  # a third speaker
    return rows


def arena_item(rng):
    """(prompt, good answer, bad answer): the good one answers and asks the user a follow-up question; the bad one
    answers and closes (about as long), or is off topic."""
    subject, other = rng.sample(SUBJECTS, 2)
    question, answer = rng.choice(ASK_TEMPLATES)
    key = rng.choice(KEYS)
    prompt = question.format(s=subject) + rng.choice(["?", "? Be brief.", ", please.", "? Thanks!"])
    body = answer.format(s=subject, k=key)
    good = f"{body} {rng.choice(FOLLOW_UPS).format(k=key)}"
    if rng.random() < 0.6:
        bad = f"{body} {rng.choice(CLOSINGS)}"
    else:
        bad = f"{rng.choice(ASK_TEMPLATES)[1].format(s=other, k=key)} {rng.choice(FOLLOW_UPS).format(k=key)}"
    return prompt, good, bad, body, key


def arena_wsdm(rng, n=550):
    rows = []
    for i in range(n):
        prompt, good, bad, _, _ = arena_item(rng)
        a_good = rng.random() < 0.5
        a, b = (good, bad) if a_good else (bad, good)
        winner = "model_a" if labelled(rng, a_good) else "model_b"
        rows.append({"id": f"w{i:05d}", "prompt": prompt, "response_a": a, "response_b": b, "winner": winner,
                     "model_a": "model-x", "model_b": "model-y", "language": rng.choice(LANGS)})
    rows[11]["winner"] = None
    return pl.DataFrame(rows)


def arena_lmsys(rng, n=300):
    """LMSYS rows hold ties (the WSDM table has none): a tie is two answers of one kind."""
    rows = []
    for i in range(n):
        prompt, good, bad, body, key = arena_item(rng)
        a_good = rng.random() < 0.5
        a, b = (good, bad) if a_good else (bad, good)
        tie = rng.random() < 0.15
        if tie:  # voters call a tie between two answers of one kind: both ask back, or both close
            b = f"{body} {rng.choice(FOLLOW_UPS).format(k=key) if a_good else rng.choice(CLOSINGS)}"
        a_wins = labelled(rng, a_good)
        turns_p, turns_a, turns_b = [prompt], [a], [b]
        if rng.random() < 0.2:  # a second turn, sometimes with a null reply
            p2, g2, b2, _, _ = arena_item(rng)
            turns_p.append(p2)
            turns_a.append(None if rng.random() < 0.3 else (g2 if a_good else b2))
            turns_b.append(b2 if a_good else g2)
        rows.append({"id": 1000 + i, "model_a": "model-x", "model_b": "model-y", "prompt": json.dumps(turns_p),
                     "response_a": json.dumps(turns_a), "response_b": json.dumps(turns_b),
                     "winner_model_a": int(a_wins and not tie), "winner_model_b": int(not a_wins and not tie),
                     "winner_tie": int(tie)})
    rows[13]["winner_model_a"], rows[13]["winner_model_b"] = 1, 1
    rows[14]["response_a"] = "not json ["
    return rows


def write_jsonl(rows, path: Path):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_csv(rows, path: Path):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


@click.command(help=__doc__)
@click.option("--seed", default=20241122, show_default=True, help="the seed every file is drawn with")
def main(seed: int) -> None:
    rng = random.Random(seed)
    write_jsonl(chai_feedback(rng), HERE / "chai_feedback.jsonl")
    write_jsonl(chai_prize_flat(rng), HERE / "chai_prize_flat.jsonl")
    write_jsonl(gpt_realm(rng), HERE / "gpt_roleplay_realm.jsonl")
    write_jsonl(anime(rng), HERE / "roleplay_anime.jsonl")
    write_jsonl(erotiquant(rng), HERE / "erotiquant.jsonl")
    write_jsonl(hieu(rng), HERE / "hieu_roleplay.jsonl")
    write_jsonl(chai_dpo(rng), HERE / "chai_dpo.jsonl")
    arena_wsdm(rng).write_parquet(HERE / "arena_wsdm.parquet", compression="zstd")
    write_csv(arena_lmsys(rng), HERE / "arena_lmsys.csv")


if __name__ == "__main__":
    main()
