"""Write the tiny model's training corpus: simple children's stories from a templated grammar.

The corpus is pdlab's own: every sentence comes from the templates and word lists below, so it
carries the project's licence (the same as the code) and no third-party text. Stories are
deterministic for a given seed.

    python scripts/make_corpus.py --stories 60000 --out data/tiny/corpus.txt
    python scripts/make_corpus.py --stories 3            # print three stories

Stories are separated by a blank line; the trainer wraps each in BOS ... EOS.
"""

from __future__ import annotations

import argparse
import random
import sys

NAMES = ["Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam", "Emma", "Jack",
         "Nora", "Finn", "Ruby", "Omar", "Ivy", "Theo", "Lucy", "Noah", "Ella", "Hugo", "Maya",
         "Kai", "Rosa", "Eli", "Ada", "Milo", "June", "Ravi"]
ANIMALS = ["cat", "dog", "rabbit", "fox", "bird", "frog", "duck", "bear", "mouse", "owl",
           "turtle", "horse", "goat", "puppy", "kitten", "squirrel"]
ANIMAL_NAMES = ["Pip", "Biscuit", "Fluff", "Shadow", "Pebble", "Sunny", "Bo", "Clover",
                "Muffin", "Ziggy", "Peanut", "Daisy"]
PLACES = ["the park", "the forest", "the beach", "the garden", "the farm", "the hill",
          "the river", "the village", "the meadow", "the lake", "the old barn", "the library",
          "the market", "the school yard", "the big tree"]
TIMES = ["One sunny morning", "One rainy day", "One cold winter night", "On a windy afternoon",
         "Early one spring morning", "One warm summer evening", "On a quiet Sunday",
         "One snowy day"]
OBJECTS = ["a red ball", "a shiny stone", "a little key", "a blue kite", "a wooden boat",
           "a big box", "a golden coin", "a soft hat", "a tiny bell", "an old map",
           "a green apple", "a paper star", "a yellow flower", "a lost shoe"]
FEELINGS_GOOD = ["happy", "glad", "proud", "excited", "calm", "cheerful"]
FEELINGS_BAD = ["sad", "scared", "worried", "lonely", "tired", "grumpy"]
ADJ = ["kind", "brave", "curious", "little", "clever", "gentle", "funny", "shy"]
FOODS = ["cake", "soup", "bread", "cookies", "apples", "pie", "honey", "berries"]
PROBLEMS = [
    ("the kite was stuck in a tall tree", "climbed up carefully and got it down"),
    ("it started to rain very hard", "found a dry place under a big rock"),
    ("the path was blocked by a fallen log", "pushed the log away together"),
    ("a little bird had hurt its wing", "made a soft bed of leaves for it"),
    ("the boat began to drift away", "ran along the shore and caught the rope"),
    ("they could not find the way home", "followed the river back to the village"),
    ("the basket of {food} fell in the mud", "washed everything in the clear stream"),
    ("a loud noise came from the bushes", "looked closer and found a tiny {animal}"),
    ("the door would not open", "used {object} to open it"),
    ("the sun went down and it got dark", "sang a song so nobody felt afraid"),
]
LESSONS = ["It is good to help your friends.", "Being brave does not mean you are never scared.",
           "Sharing makes everyone happy.", "Kind words can fix a bad day.",
           "Friends are better than treasure.", "It is fine to ask for help.",
           "Small things can make a big difference.", "Patience is a kind of magic."]
ENDINGS = ["From that day on, {a} and {b} were best friends.",
           "That night, {a} went to sleep with a big smile.",
           "{a} never forgot that day at {place}.",
           "And they all ate {food} together before going home.",
           "The end."]


def story(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    animal, pet = rng.choice(ANIMALS), rng.choice(ANIMAL_NAMES)
    place, obj, food = rng.choice(PLACES), rng.choice(OBJECTS), rng.choice(FOODS)
    fill = dict(a=a, b=b, animal=rng.choice(ANIMALS), object=obj, food=food, place=place)
    problem, fix = rng.choice(PROBLEMS)
    problem, fix = problem.format(**fill), fix.format(**fill)
    opener = rng.choice([
        f"Once upon a time, there was a {rng.choice(ADJ)} {animal} named {pet}.",
        f"Once upon a time, there was a {rng.choice(ADJ)} child named {a}.",
        f"{rng.choice(TIMES)}, {a} went to {place}.",
        f"Once upon a time, {a} lived near {place} with a {animal} named {pet}.",
    ])
    s = [opener]
    s.append(rng.choice([
        f"{a} liked to play at {place} with {b}.",
        f"{a} and {b} wanted to go on an adventure.",
        f"Every day, {a} and the {animal} went to {place} to play.",
        f"{a} had {obj} that {b} wanted to see.",
    ]))
    s.append(rng.choice([
        f"At {place}, they found {obj}.",
        f"{b} said, \"Look! I found {obj}!\"",
        f"On the way, they saw {obj} on the ground.",
        f"\"Let us go to {place},\" said {b}.",
    ]))
    s.append(f"But then {problem}.")
    s.append(f"{a} felt {rng.choice(FEELINGS_BAD)}.")
    s.append(rng.choice([
        f"\"Do not worry,\" said {b}. \"We can do it together.\"",
        f"{b} held {a}'s hand and said, \"I will help you.\"",
        f"{pet} the {animal} had an idea.",
        f"{a} took a deep breath and thought hard.",
    ]))
    s.append(f"They {fix}.")
    s.append(f"{a} was {rng.choice(FEELINGS_GOOD)} and {b} was {rng.choice(FEELINGS_GOOD)} too.")
    if rng.random() < 0.6:
        s.append(rng.choice(LESSONS))
    s.append(rng.choice(ENDINGS).format(**fill))
    return " ".join(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="-", help="file to write, '-' for stdout")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    text = "\n\n".join(story(rng) for _ in range(args.stories)) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.stories} stories, {len(text.encode())} bytes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
