"""A trained student on disk: weights plus the card that says how to feed it.

``predict`` and ``evaluate`` rebuild the exact preprocessing from the card, so a
model never sees images prepared differently from its training data.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import PreprocessConfig
from skin_core.models.classifier import Classifier
from skin_core.publish import read_publication

WEIGHTS_FILE, CARD_FILE = "student.pt", "model.json"
LAST_WEIGHTS = "last.pt"  # the student stage's last epoch's weights, beside the kept (best) ones


@dataclass(frozen=True)
class ModelCard:
    arch: str
    classes: tuple[str, ...]
    preprocess: PreprocessConfig
    variant: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @staticmethod
    def from_json(data: bytes) -> "ModelCard":
        raw = json.loads(data)
        return ModelCard(arch=raw["arch"], classes=tuple(raw["classes"]),
                         preprocess=PreprocessConfig(**raw["preprocess"]), variant=raw["variant"])


def save_bundle(folder: str, state_dict: dict, card: ModelCard) -> None:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    storage.write_bytes(storage.join(folder, WEIGHTS_FILE), buffer.getvalue())
    storage.write_bytes(storage.join(folder, CARD_FILE), card.to_json())


def bundle_folder(uri: str) -> str:
    """A published student output (its run folder) or a plain folder holding the two files."""
    publication = read_publication(uri)
    return storage.join(uri, publication.run) if publication is not None else uri


def load_bundle(uri: str, layers: Sequence[str] = ()) -> tuple[Classifier, ModelCard]:
    """The student in eval mode and its card; weights are loaded with ``weights_only``.

    ``layers`` are the feature maps its forward pass returns besides the logits
    (none to predict; the attention figures ask for them).
    """
    folder = bundle_folder(uri)
    try:
        card = ModelCard.from_json(storage.read_bytes(storage.join(folder, CARD_FILE)))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{uri}: not a trained model (no {CARD_FILE})") from err
    if card.classes != CLASSES:
        raise ValueError(f"{uri}: model classes {card.classes} differ from {CLASSES}")
    model = Classifier(card.arch, layers=layers)
    state = torch.load(io.BytesIO(storage.read_bytes(storage.join(folder, WEIGHTS_FILE))), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state)
    return model.eval(), card
