"""People of the offline world: a real face plus a drawn head, body, clothing and accessories.

A :class:`Person` is stable across clips (id, name, face, skin tone, hair, default outfit,
accessories); an :class:`Outfit` may change between clips so a model has to learn the face,
not the shirt. Every attribute has a plain-English word so ground truth can answer appearance
questions ("a red striped sweater and black trousers, with glasses").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from pvchat.errors import ConfigError
from pvchat.offline.world.faces import FILE_PREFIX, PHOTO_FACTS, available_faces, folder_faces, other_photos

# Named colours (RGB). Clothing and accessories draw from these; the name is the answer word.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "blue": (40, 80, 200), "green": (40, 150, 60), "yellow": (230, 200, 40),
    "orange": (235, 130, 30), "purple": (120, 50, 160), "pink": (235, 130, 170), "black": (25, 25, 28),
    "white": (235, 235, 235), "grey": (128, 128, 132), "brown": (110, 70, 40), "navy": (25, 35, 90),
    "teal": (30, 140, 140), "beige": (215, 195, 155),
}
TOP_KINDS = ("t-shirt", "sweater", "shirt", "jacket")
PATTERNS = ("plain", "striped", "checked", "dotted")
BOTTOM_KINDS = ("trousers", "jeans", "skirt")
BOTTOM_COLOURS = ("black", "grey", "navy", "brown", "beige", "blue")
ACCESSORIES = ("glasses", "hat", "tie", "scarf")
HAIR_STYLES = ("short", "long", "curly", "bald")
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (30, 25, 22), "dark brown": (65, 42, 28), "brown": (110, 75, 45), "blonde": (205, 170, 100),
    "grey": (150, 148, 145), "red": (150, 60, 30),
}
# Skin tones used to tint grey faces; luminance is preserved so the face keeps its shading.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (240, 200, 175), (225, 180, 150), (200, 150, 115), (170, 120, 85), (130, 90, 60), (235, 190, 160),
)
# Names are neutral: LFW tells us nothing about gender. The photo people keep their first names.
NAMES = (
    "Alex", "Sam", "Robin", "Jordan", "Taylor", "Casey", "Morgan", "Riley", "Jamie", "Avery", "Quinn",
    "Parker", "Rowan", "Sasha", "Drew", "Kai", "Noel", "Ellis", "Remy", "Sky", "Jesse", "Blair", "Dana",
    "Emery", "Frankie", "Harper", "Hayden", "Jules", "Kendall", "Lane", "Logan", "Marley", "Micah",
    "Nico", "Oakley", "Peyton", "Reese", "Sage", "Shay", "Tatum", "Toby", "Val", "Wren", "Zion", "Ari",
    "Bailey", "Cameron", "Charlie", "Dakota", "Eden", "Finley", "Gray", "Indy", "Jody", "Kit", "Lee",
    "Lou", "Max", "Nova", "Ollie", "Pat", "Ray", "Robbie", "Rory", "Ryan", "Sidney", "Stevie", "Terry",
    "Tony", "Blake", "Brook", "Carmen", "Chris", "Devon", "Eli", "Fran", "Gabe", "Jo", "Kris", "Mel",
)
FACE_SOURCES = {"lfw": "scikit-image LFW subset image", "astronaut": "scikit-image astronaut (Eileen Collins)",
                "grace_hopper": "matplotlib sample photo of Grace Hopper"}
PHOTO_NAMES = {"astronaut": "Eileen", "grace_hopper": "Grace"}
PHOTO_HAIR = {"astronaut": ("short", "blonde"), "grace_hopper": ("short", "grey")}


@dataclass(frozen=True)
class Outfit:
    """What a person wears in one clip."""

    top: str  # one of TOP_KINDS
    top_colour: str  # key of COLOURS
    pattern: str  # one of PATTERNS
    pattern_colour: str  # key of COLOURS (stripes, checks, dots)
    bottom: str  # one of BOTTOM_KINDS
    bottom_colour: str  # key of COLOURS
    accessories: tuple[str, ...] = ()  # subset of ACCESSORIES, in ACCESSORIES order
    accessory_colours: tuple[str, ...] = ()  # one colour per accessory ("black" for glasses)

    def describe(self) -> str:
        """Plain English, e.g. 'a red striped sweater and black trousers, with glasses and a blue hat'."""
        pattern = "" if self.pattern == "plain" else f" {self.pattern}"
        text = f"{_article(self.top_colour)} {self.top_colour}{pattern} {self.top} and {self.bottom_colour} {self.bottom}"
        extras = [_accessory_phrase(a, c) for a, c in zip(self.accessories, self.accessory_colours)]
        if extras:
            text += ", with " + _join(extras)
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["accessories"] = list(self.accessories)
        d["accessory_colours"] = list(self.accessory_colours)
        d["description"] = self.describe()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Outfit":
        return cls(top=d["top"], top_colour=d["top_colour"], pattern=d["pattern"], pattern_colour=d["pattern_colour"],
                   bottom=d["bottom"], bottom_colour=d["bottom_colour"], accessories=tuple(d["accessories"]),
                   accessory_colours=tuple(d["accessory_colours"]))


@dataclass(frozen=True)
class Person:
    """One person of the world (stable across clips)."""

    id: str  # "p00", "p01", ...
    name: str
    face: str  # key for pvchat.offline.world.faces.load_face
    skin_tone: tuple[int, int, int]  # tint for grey faces; photos keep their own colour
    hair_style: str
    hair_colour: str
    outfit: Outfit  # the default outfit (worn in the reference video)
    gender: str | None = None
    age: str | None = None
    attributes: dict = field(default_factory=dict)  # anything else known
    photos: tuple[str, ...] = ()  # other photos of the same person (face keys): query clips, never the reference

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skin_tone"] = list(self.skin_tone)
        d["photos"] = list(self.photos)
        d["outfit"] = self.outfit.to_dict()
        d["hair"] = f"{self.hair_colour} {self.hair_style} hair" if self.hair_style != "bald" else "bald"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Person":
        return cls(id=d["id"], name=d["name"], face=d["face"], skin_tone=tuple(d["skin_tone"]),
                   hair_style=d["hair_style"], hair_colour=d["hair_colour"], outfit=Outfit.from_dict(d["outfit"]),
                   gender=d.get("gender"), age=d.get("age"), attributes=dict(d.get("attributes", {})),
                   photos=tuple(d.get("photos", ())))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _accessory_phrase(name: str, colour: str) -> str:
    return "glasses" if name == "glasses" else f"{_article(colour)} {colour} {name}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def random_outfit(rng: np.random.Generator, accessories: tuple[str, ...] | None = None) -> Outfit:
    """A random outfit; ``accessories`` fixes the accessory set (else 0-2 drawn at random)."""
    names = list(COLOURS)
    top = str(rng.choice(TOP_KINDS))
    top_colour = str(rng.choice(names))
    pattern = str(rng.choice(PATTERNS, p=[0.45, 0.2, 0.2, 0.15]))
    pattern_colour = str(rng.choice([c for c in names if c != top_colour and _contrast(c, top_colour)]))
    bottom = str(rng.choice(BOTTOM_KINDS, p=[0.5, 0.35, 0.15]))
    bottom_colour = "blue" if bottom == "jeans" else str(rng.choice([c for c in BOTTOM_COLOURS if c != "blue"]))
    if accessories is None:
        k = int(rng.choice([0, 1, 2], p=[0.35, 0.45, 0.2]))
        accessories = tuple(sorted(rng.choice(ACCESSORIES, size=k, replace=False).tolist(), key=ACCESSORIES.index))
    if "tie" in accessories and "scarf" in accessories:  # a scarf would hide the tie
        accessories = tuple(a for a in accessories if a != "scarf")
    if "tie" in accessories and top not in ("shirt", "jacket"):
        top = "shirt"
    colours = tuple("black" if a == "glasses" else str(rng.choice([c for c in names if c != top_colour]))
                    for a in accessories)
    return Outfit(top, top_colour, pattern, pattern_colour, bottom, bottom_colour, tuple(accessories), colours)


def _contrast(a: str, b: str) -> bool:
    return float(np.abs(np.subtract(COLOURS[a], COLOURS[b])).sum()) > 180


def make_people(n: int, seed: int = 0, faces: list[str] | None = None) -> list[Person]:
    """``n`` distinct people with faces drawn from ``faces`` (default :func:`available_faces`;
    deterministic in seed)."""
    faces = available_faces() if faces is None else list(faces)
    if n < 1:
        raise ConfigError(f"people must be >= 1, got {n}")
    if n > len(faces):
        raise ConfigError(f"people must be <= {len(faces)} (distinct real faces available offline), got {n}")
    rng = np.random.default_rng([seed, 1])
    chosen = [faces[i] for i in rng.choice(len(faces), size=n, replace=False)]
    names = [str(x) for x in rng.permutation(NAMES)]
    people = []
    for k, key in enumerate(chosen):
        if key in PHOTO_NAMES:
            name = PHOTO_NAMES[key]
            style, hair = PHOTO_HAIR[key]
            facts = PHOTO_FACTS[key]
        else:
            name = names.pop(0) if names else f"Person{k}"
            while name in PHOTO_NAMES.values() and names:
                name = names.pop(0)
            style = str(rng.choice(HAIR_STYLES, p=[0.45, 0.2, 0.15, 0.2]))
            hair = str(rng.choice(list(HAIR_COLOURS)))
            facts = {"gender": None, "age": None}
        tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        people.append(Person(id=f"p{k:02d}", name=name, face=key, skin_tone=tone, hair_style=style, hair_colour=hair,
                             outfit=random_outfit(rng), gender=facts["gender"], age=facts["age"],
                             attributes={"face_source": FACE_SOURCES[key.split("-")[0]]
                                         + (f" #{int(key[4:])}" if key.startswith("lfw-") else "")},
                             photos=other_photos(key)))
    return people


def people_from_folder(root, seed: int = 0, n: int | None = None) -> list[Person]:
    """People from a user's photo folder ``root/<person>/*.jpg`` (:func:`pvchat.offline.world.faces.folder_faces`):
    the folder name is the person's name, the first photo (sorted) the reference face, the others
    ``photos``; body, hair and clothes are drawn (deterministic in ``seed``). ``n``: the first n."""
    folders = folder_faces(root)
    names = list(folders)[: n if n is not None else None]
    if n is not None and n > len(folders):
        raise ConfigError(f"people must be <= {len(folders)} (person folders in {root}), got {n}")
    rng = np.random.default_rng([seed, 2])
    people = []
    for k, name in enumerate(names):
        keys = folders[name]
        people.append(Person(id=f"p{k:02d}", name=name, face=keys[0], skin_tone=SKIN_TONES[0],
                             hair_style=str(rng.choice(HAIR_STYLES, p=[0.45, 0.2, 0.15, 0.2])),
                             hair_colour=str(rng.choice(list(HAIR_COLOURS))), outfit=random_outfit(rng),
                             attributes={"face_source": f"user photo {keys[0][len(FILE_PREFIX):]}"},
                             photos=tuple(keys[1:])))
    return people

