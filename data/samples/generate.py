"""Write the project's own sample data, one file per source format, in the real schemas (DESIGN.md).

The samples carry signal that later stages learn: a good reply stays in character and answers what the
user said (it names the user's topic); a bad one is bland, breaks character or ignores the user. Thumbs
up, chai-dpo accepted and arena winners follow that rule with label noise. A few malformed rows of the
kinds real data has are included on purpose, so the default run shows rejects being counted.

Seeded and deterministic: `python data/samples/generate.py` rewrites the same bytes.
"""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
USER = "Anonymous user"
NOISE = 0.12

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
GOOD = ["*{manner}* Ah, {t}! {detail} {catch}", "{catch} *{manner}* You ask about {t}? {detail}",
        "*{manner}* {detail} That is the truth of {t}, friend.", "{t_cap}... *{manner}* {detail} {catch}"]
DETAILS = ["I have studied it for years, and it still surprises me.", "Few know that it changes with the moon.",
           "Come closer and I will show you what I found.", "It was here long before any of us.",
           "Legend says it only answers to the brave.", "I wrote everything down in my journal.",
           "We should go see it together tonight.", "It hides a secret, and I think you are close to it."]
BAD = ["ok", "I don't know.", "As an AI language model, I cannot discuss that.", "Let's talk about something else.",
       "Sure.", "Hmm.", "I am just a chatbot and have no opinions.", "Whatever you say.", "lol", "Can you repeat that?"]
LANGS = ["English", "English", "English", "Spanish", "French", "German", "Russian", "Chinese", "Vietnamese"]
SUBJECTS = ["volcano", "bicycle", "sourdough bread", "black hole", "honeybee", "chess opening", "compost heap",
            "electric guitar", "rainbow", "glacier", "sunflower", "submarine", "octopus", "lighthouse", "violin",
            "tomato plant", "solar panel", "paper airplane", "coffee grinder", "hot air balloon", "penguin",
            "rice cooker", "telescope", "earthquake", "password manager", "marathon", "origami crane", "coral reef",
            "wind turbine", "sewing machine", "thunderstorm", "mushroom", "spreadsheet", "kayak", "fountain pen",
            "cactus", "river delta", "jigsaw puzzle", "snowflake", "firefly", "bread oven", "hiking boot",
            "water filter", "owl", "mosaic", "pendulum", "tea kettle", "comet", "beehive", "sailboat"]
ASK_TEMPLATES = [("How does a {s} work", "A {s} works by turning one kind of energy or material into another, step by step; the key part is {k}."),
                 ("Explain the {s} to a child", "Imagine the {s} as a little helper: its job is {k}, and it does it every day."),
                 ("Give me three facts about the {s}", "1. The {s} depends on {k}. 2. People have studied the {s} for centuries. 3. Every {s} is a bit different."),
                 ("What is the history of the {s}", "The {s} has a long history; early versions focused on {k}, and modern ones refined it."),
                 ("How do I take care of a {s}", "To take care of a {s}, check {k} regularly, keep it clean, and do not rush it."),
                 ("Write a short poem about a {s}", "Oh {s}, so quiet and so bright, / you carry {k} into the night."),
                 ("What can go wrong with a {s}", "The most common problem with a {s} is {k}; catch it early and it is easy to fix."),
                 ("Compare a {s} with a {o}", "A {s} is about {k}, while a {o} works differently; choose by what you need."),
                 ("Why do people like the {s}", "People like the {s} because of {k}, and because it is fun to learn about.")]
KEYS = ["balance", "timing", "pressure", "light", "water", "heat", "patience", "shape", "rhythm", "airflow"]
OFF = ["I like turtles.", "Sorry, I can't help with that.", "The weather is nice today.", "Please ask again later.",
       "That is an interesting question.", "I am not sure what you mean.", "Bananas are yellow.", "No.",
       "As an AI, I have no opinion on this.", "Let me think about it and get back to you.", "Good question!"]


def good_reply(rng, bot, topic):
    name, _, manner, catch = bot
    return rng.choice(GOOD).format(manner=manner, t=topic[1], t_cap=topic[1][0].upper() + topic[1][1:],
                                   detail=rng.choice(DETAILS), catch=catch)


def dialogue(rng, bot, good: bool, turns: int):
    """(user text, reply text, is_good) per exchange; a bad conversation has mostly bad replies."""
    out = []
    for _ in range(turns):
        topic = rng.choice(TOPICS)
        ask = rng.choice(ASKS).format(t=topic[1])
        reply_good = good if rng.random() > 0.2 else not good
        out.append((ask, good_reply(rng, bot, topic) if reply_good else rng.choice(BAD), reply_good))
    return out


def greeting(bot):
    name, persona, manner, catch = bot
    return f"*{manner}* Hello, traveller. I am {name}, {persona}. {catch}"


def labelled(rng, good: bool) -> bool:
    return good if rng.random() > NOISE else not good


def chai_feedback(rng, n=900):
    rows = []
    for i in range(n):
        bot, good = rng.choice(BOTS), rng.random() < 0.55
        conv = [{"name": bot[0], "text": greeting(bot)}]
        for ask, reply, _ in dialogue(rng, bot, good, rng.randint(1, 4)):
            conv.append({"name": USER, "text": ask})
            if good and rng.random() < 0.25:  # the user swiped a bland reply away before this one
                for _ in range(rng.randint(1, 2)):
                    conv.append({"name": f"{bot[0]} (deleted)", "text": rng.choice(BAD)})
            if rng.random() < 0.1:
                reply += "\n\n" + rng.choice(DETAILS)  # multi-line messages stay whole
            conv.append({"name": bot[0], "text": reply})
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


def chai_prize_flat(rng, n=800):
    rows = []
    for i in range(n):
        bot, good = rng.choice(BOTS), rng.random() < 0.5
        lines = [f"{bot[0]}: {greeting(bot)}"]  # no persona header: the real dataset has none
        for ask, reply, _ in dialogue(rng, bot, good, rng.randint(1, 4)):
            lines.append(f"{USER}: {ask}")
            if rng.random() < 0.15:
                lines.append(f"{bot[0]} (deleted): {rng.choice(BAD)}")
            if rng.random() < 0.15:
                reply += "\n" + rng.choice(DETAILS)  # a continuation line without a speaker prefix
            lines.append(f"{bot[0]}: {reply}")
        rows.append({"conversation_id": f"p{i:05d}", "bot_id": f"bot_{bot[0].lower()}", "user_id": f"u{rng.randint(0, 300)}",
                     "conversation": "\n".join(lines), "thumbs_up": labelled(rng, good), "feedback": "",
                     "model_name": "prize_model", "season": rng.choice(["s5", "s6"])})
    rows[7]["conversation"] = "just some text with no speakers at all"
    return rows


def roleplay_turns(rng, bot, good=True):
    turns = [("system", f"You are {bot[0]}, {bot[1]}. Stay in character.")]
    for ask, reply, _ in dialogue(rng, bot, good, rng.randint(2, 4)):
        turns += [("user", ask), ("assistant", reply)]
    return turns


def gpt_realm(rng, n=150):
    rows = [{"name": b[0], "conversation": [{"role": r, "content": c} for r, c in roleplay_turns(rng, b)]}
            for b in (rng.choice(BOTS) for _ in range(n))]
    rows[3]["conversation"][1]["role"] = "narrator"
    return rows


def anime(rng, n=100):
    rows = []
    for _ in range(n):
        bot = rng.choice(BOTS)
        turns = roleplay_turns(rng, bot)
        turns.insert(1, ("assistant", greeting(bot)))
        rows.append({"messages": [{"role": r, "content": c.replace("\n", "\r\n") + ("\r\n" if r == "system" else "")}
                                  for r, c in turns]})
    return rows


def erotiquant(rng, n=80):
    rows = []
    for _ in range(n):
        turns = roleplay_turns(rng, rng.choice(BOTS))
        rows.append({"text": "\n".join(f"{r.upper()}: {c}" for r, c in turns)})
    rows[2]["text"] = "Some preamble\n" + rows[2]["text"]
    return rows


def hieu(rng, n=120):
    rows = []
    for _ in range(n):
        bot = rng.choice(BOTS)
        turns = roleplay_turns(rng, bot)
        rows.append({"name": bot[0], "description": bot[1],
                     "text": "\n".join(f"<|{r}|>\n{c}</s>" for r, c in turns)})
    return rows


def chai_dpo(rng, n=700):
    rows = []
    for i in range(n):
        bot = rng.choice(BOTS)
        history = [{"sender": bot[0], "value": greeting(bot)}]
        for ask, reply, _ in dialogue(rng, bot, True, rng.randint(0, 2)):
            history += [{"sender": USER, "value": ask}, {"sender": bot[0], "value": reply}]
        topic = rng.choice(TOPICS)
        history.append({"sender": USER, "value": rng.choice(ASKS).format(t=topic[1])})
        good, bad = good_reply(rng, bot, topic), rng.choice(BAD)
        if rng.random() < NOISE:
            good, bad = bad, good
        rejected = bad if rng.random() < 0.3 else [bad, rng.choice(BAD)]
        rows.append({"history": history, "accepted": good, "rejected": rejected, "thumbs_up": rng.random() < 0.7,
                     "submission_id": f"sub_{rng.randint(0, 20)}", "model_name": "dpo_model", "bot_id": f"bot_{bot[0].lower()}"})
    rows[9]["history"].insert(1, {"sender": "Somebody Else", "value": "Can I join in?"})  # a third speaker
    return rows


def arena_item(rng):
    subject, other = rng.sample(SUBJECTS, 2)
    question, answer = rng.choice(ASK_TEMPLATES)
    key = rng.choice(KEYS)
    prompt = question.format(s=subject, o=other) + rng.choice(["?", "? Be brief.", ", please.", "? Thanks!"])
    good = answer.format(s=subject, o=other, k=key) + rng.choice(["", " Hope this helps!", " Want more detail?"])
    bad = rng.choice(OFF) if rng.random() < 0.7 else f"I would rather talk about the {rng.choice(SUBJECTS)}."
    return prompt, good, bad


def arena_wsdm(rng, n=1400):
    rows = []
    for i in range(n):
        prompt, good, bad = arena_item(rng)
        a_good = rng.random() < 0.5
        a, b = (good, bad) if a_good else (bad, good)
        winner = "model_a" if labelled(rng, a_good) else "model_b"
        rows.append({"id": f"w{i:05d}", "prompt": prompt, "response_a": a, "response_b": b, "winner": winner,
                     "model_a": "model-x", "model_b": "model-y", "language": rng.choice(LANGS)})
    rows[11]["winner"] = None
    return pl.DataFrame(rows)


def arena_lmsys(rng, n=600):
    rows = []
    for i in range(n):
        prompt, good, bad = arena_item(rng)
        a_good = rng.random() < 0.5
        a, b = (good, bad) if a_good else (bad, good)
        tie = rng.random() < 0.1
        a_wins = labelled(rng, a_good)
        turns_p, turns_a, turns_b = [prompt], [a], [b]
        if rng.random() < 0.2:  # a second turn, sometimes with a null reply
            p2, g2, b2 = arena_item(rng)
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


def main(seed: int = 20241122) -> None:
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
