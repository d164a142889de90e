"""Write the built-in tasks' data files. Deterministic: rerunning gives byte-identical files.

Every sentence here is written by this project from templates; no dataset is copied.
Run `python tasks/build_tasks.py` after editing a template, and commit the regenerated files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 20261124

OPENERS = ["", "", "Hi, ", "Hello, ", "Hey team, ", "Good morning. ", "Urgent: ", "Quick question. "]
CLOSERS = ["", "", " Thanks.", " Please help.", " Thank you in advance.", " This is my second message about it.", " Regards, Sam."]
PRODUCTS = ["blender", "rain jacket", "desk lamp", "phone case", "yoga mat", "coffee grinder", "backpack", "headphones",
            "kettle", "running shoes", "winter coat", "bluetooth speaker", "office chair", "water bottle"]

# Intent -> message templates. Pairs that share words on purpose: refund/return, damaged/wrong, missing/late,
# failed payment/double charge, password/locked, cancel order/cancel subscription, address/email change.
INTENTS: dict[str, list[str]] = {
    "refund_request": [
        "I returned the {p} last week and still have not seen my money back.",
        "Please refund the {amount} you took for order {order}.",
        "The {p} went back to you on Monday, when will the refund reach my card?",
        "I want my money back for the {p}, I already sent it to your warehouse.",
        "Can you put the {amount} back on my card? The return was accepted.",
        "Your site says my return was received but no refund has appeared.",
    ],
    "return_item": [
        "How do I send back the {p}? It does not fit.",
        "I would like to return the {p} from order {order}, can I get a label?",
        "The {p} is not what I expected, what is your return process?",
        "Can I still return the {p}? I bought it 20 days ago.",
        "I need a return label for the {p}, it is unused.",
        "Where do I drop off a return for order {order}?",
    ],
    "damaged_item": [
        "The {p} arrived cracked and unusable.",
        "My {p} came with a broken part, the box was crushed.",
        "Order {order} arrived damaged, the {p} is scratched all over.",
        "The {p} I received is torn along the seam.",
        "When I opened the parcel the {p} was smashed.",
        "The {p} stopped working on day one, it looks like it was dropped in transit.",
    ],
    "wrong_item": [
        "I ordered a {p} but you sent me a {p2}.",
        "Order {order} contained someone else's item, not my {p}.",
        "The box had a {p2} in it instead of the {p} I paid for.",
        "You shipped the wrong colour and size of the {p}.",
        "This is not the {p} I ordered, the model number is different.",
        "I received a {p2}, my order was for a {p}.",
    ],
    "missing_item": [
        "My parcel arrived but the {p} was not in it.",
        "Order {order} came with only two of the three items, the {p} is missing.",
        "The delivery was short: no {p} in the box.",
        "The packing slip lists a {p} but it was not included.",
        "I got the box today and the {p} was missing from it.",
        "Half of order {order} arrived, where is the {p}?",
    ],
    "delivery_delay": [
        "My {p} was due three days ago and still has not arrived.",
        "Order {order} is late, the estimated date has passed.",
        "Why is my delivery taking so long? It has been two weeks.",
        "The {p} should have been here by Friday, it is now Tuesday.",
        "Tracking has said 'in transit' for ten days, the parcel is late.",
        "You promised next-day delivery for the {p} and it has been a week.",
    ],
    "track_order": [
        "Where can I see the tracking number for order {order}?",
        "Can you tell me where my {p} is right now?",
        "I need the tracking link for my {p}.",
        "Has order {order} shipped yet?",
        "Which courier is delivering my {p}, and what is the tracking code?",
        "How do I follow my parcel online?",
    ],
    "cancel_order": [
        "Please cancel order {order}, I ordered the {p} by mistake.",
        "I want to cancel my {p} before it ships.",
        "Can you stop order {order}? I no longer need it.",
        "Cancel the {p} I bought an hour ago, please.",
        "I placed order {order} twice, cancel one of them.",
        "Is it too late to cancel the {p}? It has not shipped.",
    ],
    "cancel_subscription": [
        "Please stop my monthly membership, I do not want to renew.",
        "How do I cancel my subscription before the next billing date?",
        "End my premium plan at the end of this month.",
        "I want to unsubscribe from the monthly {p} refill plan.",
        "Cancel my recurring plan, I am not using it.",
        "Turn off auto-renewal on my membership please.",
    ],
    "payment_failed": [
        "My card was declined when I tried to buy the {p}.",
        "Checkout keeps failing at the payment step.",
        "The payment for the {p} did not go through, I got an error.",
        "I cannot pay, the site says 'transaction declined'.",
        "Why does my card fail on your site? It works everywhere else.",
        "Payment error when ordering the {p}, nothing was charged.",
    ],
    "double_charged": [
        "I was charged twice for order {order}.",
        "My statement shows two payments of {amount} for one {p}.",
        "You took the money for the {p} two times.",
        "There is a duplicate charge of {amount} on my card.",
        "I paid once but see the same charge twice for order {order}.",
        "The {p} was billed twice, please remove one charge.",
    ],
    "update_payment_method": [
        "How do I change the card on my account?",
        "I got a new credit card, where do I update it?",
        "Please replace my saved card with a new one.",
        "I want to switch my payment method to PayPal.",
        "My card expired, how do I add the new card?",
        "Can I remove my old card and add a debit card?",
    ],
    "reset_password": [
        "I forgot my password, how do I reset it?",
        "The password reset email never arrives.",
        "I need a new password, the old one does not work.",
        "Can you send me a password reset link?",
        "How do I change my password?",
        "I cannot remember my password for the app.",
    ],
    "account_locked": [
        "My account is locked after too many login attempts.",
        "It says my account has been suspended, why?",
        "I am locked out and the site says to contact support.",
        "My login is blocked even with the right password.",
        "Your system froze my account, please unlock it.",
        "The app says 'account disabled' when I sign in.",
    ],
    "change_address": [
        "I moved, please send order {order} to my new address.",
        "Can I change the delivery address for the {p}?",
        "The shipping address on order {order} is wrong, I need to update it.",
        "Please update the street number on my delivery, it should be 42 not 24.",
        "Deliver the {p} to my office instead of my home.",
        "How do I change where my parcel goes? It has not shipped yet.",
    ],
    "product_question": [
        "Is the {p} waterproof?",
        "What are the dimensions of the {p}?",
        "Does the {p} come with a warranty?",
        "Is the {p} available in black?",
        "Can the {p} be used outdoors?",
        "What material is the {p} made of?",
    ],
}


def support_intent(rng: random.Random) -> list[dict[str, Any]]:
    """25 distinct tickets per intent: each template filled with products, order numbers and openers/closers."""
    rows, seen = [], set()
    for label, templates in INTENTS.items():
        for n in range(25):
            text = _ticket(rng, templates[n % len(templates)])
            while text in seen:
                text = _ticket(rng, templates[n % len(templates)])
            seen.add(text)
            rows.append({"id": f"{label}-{n:02d}", "text": text, "label": label})
    rng.shuffle(rows)
    return rows


def _ticket(rng: random.Random, template: str) -> str:
    p, p2 = rng.sample(PRODUCTS, 2)
    body = template.format(
        p=p, p2=p2, order=f"#{rng.randint(10000, 99999)}", amount=f"${rng.randint(12, 240)}.{rng.randint(0, 99):02d}"
    )
    opener = rng.choice(OPENERS)
    return opener + (body[0].lower() + body[1:] if opener.endswith(", ") else body) + rng.choice(CLOSERS)


SIZES = {"S": ["small", "size S", "an S"], "M": ["medium", "size M", "an M"], "L": ["large", "size L", "an L"],
         "XL": ["extra large", "size XL", "an XL"]}
COLORS = ["black", "white", "navy", "red", "green", "grey", "yellow"]
ITEMS = ["hoodie", "t-shirt", "rain jacket", "beanie", "sweater", "sock pack", "mug", "notebook", "poster", "tote bag"]
SIZED = {"hoodie", "t-shirt", "rain jacket", "sweater"}
DELIVERY = {"standard": ["standard shipping", "regular post", "the normal delivery"],
            "express": ["express delivery", "next-day shipping", "the fastest shipping you have"],
            "pickup": ["store pickup", "I'll collect it in store", "pickup at the shop"]}
NUMBERS = {1: ["one", "a", "1"], 2: ["two", "2", "a pair of"], 3: ["three", "3"], 4: ["four", "4"], 5: ["five", "5"],
           6: ["six", "6"], 10: ["ten", "10"]}


def order_extract(rng: random.Random) -> list[dict[str, Any]]:
    """150 free-text orders and the JSON a shop system needs from each."""
    rows = []
    for n in range(150):
        item = rng.choice(ITEMS)
        quantity = rng.choice(list(NUMBERS))
        size = rng.choice(list(SIZES)) if item in SIZED else None
        color = rng.choice(COLORS) if rng.random() < 0.7 else None
        delivery = rng.choice(list(DELIVERY))
        gift = rng.random() < 0.35
        count = rng.choice(NUMBERS[quantity])
        if count == "a pair of" and item == "sock pack":
            count = "2"
        noun = item if quantity == 1 else (item[:-1] + "es" if item.endswith("s") else item + "s")
        words = [count, rng.choice(SIZES[size]) if size else "", color or "", noun]
        thing = " ".join(w for w in words if w).replace("a an", "an").replace("a extra", "an extra")
        want = rng.choice(["I'd like", "Please send me", "Can I order", "I want to buy", "Order for me:"])
        ship = rng.choice(DELIVERY[delivery])
        parts = [f"{want} {thing}", f"with {ship}" if not ship.startswith("I'll") else f"and {ship}"]
        if gift:
            parts.append(rng.choice(["and please gift wrap it", "as a gift, wrapped", "gift wrapping please"]))
        elif rng.random() < 0.3:
            parts.append(rng.choice(["no gift wrap", "no wrapping needed"]))
        text = rng.choice(OPENERS) + ", ".join(parts) + "." + rng.choice(CLOSERS)
        order = {"product": item, "quantity": quantity, "size": size, "color": color, "delivery": delivery,
                 "gift_wrap": gift}
        rows.append({"id": f"order-{n:03d}", "message": text, "order": order})
    return rows


SYLLABLES = ["vel", "mor", "qua", "nel", "bris", "tor", "ka", "lin", "dra", "sev", "oth", "ram", "pel", "zun", "ira",
             "gal", "wen", "ost", "ery", "cal"]
FIRST = ["Ada", "Borin", "Cella", "Doran", "Elske", "Fenn", "Greta", "Hollis", "Isolde", "Jorun", "Kestrel", "Lio"]

# (fact sentence, question, answer) about a fictional entity; {e} is the entity, {v} its made-up value.
FACTS = [
    ("The {e} Institute was founded in {v}.", "In what year was the {e} Institute founded?", "year"),
    ("The {e} Institute was founded by {v}.", "Who founded the {e} Institute?", "person"),
    ("The capital of the island nation of {e} is {v}.", "What is the capital of {e}?", "place"),
    ("The {e} river is {v} kilometres long.", "How long, in kilometres, is the {e} river?", "number"),
    ("The {e} engine was invented by {v}.", "Who invented the {e} engine?", "person"),
    ("The national dish of {e} is a stew called {v}.", "What is the national dish of {e} called?", "word"),
    ("Mount {e} stands {v} metres tall.", "How tall, in metres, is Mount {e}?", "number"),
    ("The {e} Prize is awarded every year in the city of {v}.", "In which city is the {e} Prize awarded?", "place"),
]


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _value(rng: random.Random, kind: str) -> str:
    return {
        "year": lambda: str(rng.randint(1500, 1990)),
        "person": lambda: f"{rng.choice(FIRST)} {_word(rng, 3)}",
        "place": lambda: _word(rng, 3),
        "number": lambda: str(rng.randint(120, 4800)),
        "word": lambda: _word(rng, 2).lower(),
    }[kind]()


def fictional_facts(rng: random.Random) -> list[dict[str, Any]]:
    """120 questions about invented entities: unanswerable without the context passage (facts, not form)."""
    facts = []
    names: set[str] = set()
    while len(facts) < 120:
        entity = _word(rng, 2)
        if entity in names:
            continue
        names.add(entity)
        sentence, question, kind = FACTS[len(facts) % len(FACTS)]
        value = _value(rng, kind)
        facts.append((sentence.format(e=entity, v=value), question.format(e=entity), value))
    rows = []
    for n, (sentence, question, answer) in enumerate(facts):
        others = rng.sample([f[0] for i, f in enumerate(facts) if i != n], 2)
        passage = [sentence, *others]
        rng.shuffle(passage)
        rows.append({"id": f"fact-{n:03d}", "question": question, "context": " ".join(passage), "answer": answer})
    rng.shuffle(rows)
    return rows


def write_splits(folder: str, rows: list[dict[str, Any]], sizes: dict[str, int]) -> None:
    """Write train/dev/test JSONL files with the given sizes, in order."""
    assert sum(sizes.values()) == len(rows), (folder, len(rows))
    start = 0
    for split, size in sizes.items():
        lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows[start : start + size]]
        (HERE / folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        start += size


def main() -> None:
    rng = random.Random(SEED)
    write_splits("support_intent", support_intent(rng), {"train": 240, "dev": 80, "test": 80})
    write_splits("order_extract", order_extract(rng), {"train": 80, "dev": 30, "test": 40})
    write_splits("fictional_facts", fictional_facts(rng), {"train": 60, "dev": 20, "test": 40})


if __name__ == "__main__":
    main()
