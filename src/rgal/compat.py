"""The reference code's command line, read by `rgal distill`.

Scripts written for the authors' released `main.py` (`python main.py --kd_steps 400 --adv 1.0
--triplet 0.1 --pair_sample ...`) run as `rgal distill` with the same flags. When a command
line uses any of the reference's own spellings, every option it does not give takes the
reference parser's default (e.g. `--bn` 0, `--T` 1, `--g_steps` 1, `--dataset cifar100`), as
it would there; flags with no meaning here are accepted with a note.
"""

from __future__ import annotations

import json
from typing import Any

from .config import ConfigError

# reference flag -> (our key, type); value flags
VALUE_FLAGS: dict[str, tuple[str, type]] = {
    "--teacher_weights": ("teacher_weights", str), "--triplet": ("w_rel_syn", float),
    "--striplet": ("w_rel_stu", float), "--cd_loss": ("w_cd", float),
    "--custom_steps": ("relation_until", float), "--adv": ("w_adv", float),
    "--bn": ("w_bn", float), "--oh": ("w_oh", float), "--save_dir": ("out", str),
    "--data_root": ("data_root", str), "--teacher": ("teacher", str),
    "--student": ("student", str), "--dataset": ("dataset", str), "--lr": ("lr", float),
    "--lr_g": ("lr_g", float), "--T": ("tau", float), "--epochs": ("epochs", int),
    "--g_steps": ("g_steps", int), "--kd_steps": ("kd_steps", int),
    "--batch_size": ("batch_size", int), "--synthesis_batch_size": ("synthesis_batch_size", int),
    "--seed": ("seed", int), "--momentum": ("momentum", float),
    "--wd": ("weight_decay", float), "--weight_decay": ("weight_decay", float),
    "--cr": ("w_cr", float), "--cr_T": ("cr_temperature", float),
}
# reference-only value flags handled by hand
SPECIAL = ("--start_layer", "--end_layer", "--triplet_target", "--striplet_feature",
           "--ep_steps", "--gram_loss", "--act", "--sampling", "--balance", "--resume",
           "--start_epoch", "--lr_decay_milestones")
SWITCHES = ("--pair_sample", "--balanced_sampling", "--cmi", "--fmix", "--evaluate_only",
            "--pretrained")
# accepted and ignored: what they set has no meaning here
IGNORED = {"--gpu": "the device is chosen with --device (auto: CUDA when present)",
           "--log_tag": "outputs go to --save_dir / --out", "--print_freq": "progress bars show "
           "the losses", "-j": "data stays in memory (no loader workers)",
           "--workers": "data stays in memory (no loader workers)"}

# the reference parser's defaults (main.py), for what a command line leaves out
DEFAULTS: dict[str, Any] = {
    "dataset": "cifar100", "data_root": "data", "teacher": "wrn40_2", "student": "wrn16_1",
    "lr": 0.1, "lr_g": 1e-3, "tau": 1.0, "epochs": 200, "g_steps": 1, "kd_steps": 400,
    "batch_size": 128, "seed": 0, "momentum": 0.9, "weight_decay": 1e-4, "w_adv": 0.0,
    "w_bn": 0.0, "w_oh": 0.0, "w_rel_syn": 0.0, "w_rel_stu": 0.0, "w_cd": 0.0,
    "relation_until": 1.0, "out": "run/synthesis", "pair_sampling": False,
    "syn_sampler": "distance", "syn_relation_model": "teacher", "stu_relation_feature": "stages",
    "relation_stages": "0:4", "syn_relation_feature": "stages", "reset_generator": True,
    "cd_start_stage": 0,
}
REFERENCE_ONLY = set(VALUE_FLAGS) - {"--lr", "--epochs", "--seed", "--teacher", "--student",
                                     "--dataset", "--momentum"}
REFERENCE_ONLY |= (set(SPECIAL) - {"--resume"}) | set(SWITCHES) | set(IGNORED)  # ours too


def uses_reference_flags(argv: list[str]) -> bool:
    """Whether a `distill` command line is written in the reference code's spelling."""
    return any(a.split("=", 1)[0] in REFERENCE_ONLY for a in argv if a.startswith("-"))


def _value(flag: str, raw: str, typ: type) -> Any:
    try:
        return typ(raw)
    except ValueError:
        raise ConfigError(f"{flag} expects a {typ.__name__}, got {raw!r}") from None


def translate(argv: list[str]) -> tuple[list[str], list[str]]:
    """A reference command line -> (`rgal distill` arguments, notes for the user).

    Our own flags (e.g. `--device cpu`, `--no-progress`) pass through unchanged.
    """
    tokens: list[tuple[str, str | None]] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        flag, eq, inline = a.partition("=")
        known = flag in VALUE_FLAGS or flag in SPECIAL or flag in IGNORED
        if flag in SWITCHES:
            tokens.append((flag, None))
        elif known:
            if eq:
                value = inline
            elif i + 1 < len(argv) and not (argv[i + 1].startswith("--")
                                             and len(argv[i + 1]) > 2):
                value = argv[i + 1]
                i += 1
            elif flag == "--resume":
                rest.append(a)  # our own --resume (continue the run in --out)
                i += 1
                continue
            else:
                raise ConfigError(f"{flag} expects a value")
            tokens.append((flag, value))
        else:
            rest.append(a)
        i += 1
    values: dict[str, Any] = dict(DEFAULTS)
    notes: list[str] = []
    ignored: list[str] = []
    start, end = 0, 4
    explicit: set[str] = set()
    for flag, raw in tokens:
        if flag in VALUE_FLAGS:
            key, typ = VALUE_FLAGS[flag]
            values[key] = _value(flag, raw, typ)
            explicit.add(key)
        elif flag in IGNORED:
            ignored.append(flag)
        elif flag == "--pair_sample":
            values["pair_sampling"] = True
        elif flag == "--balanced_sampling":
            values["syn_sampler"] = "focal"
        elif flag == "--cmi":
            values["method"] = "cmi+rgal"
        elif flag == "--start_layer":
            start = _value(flag, raw, int)
        elif flag == "--end_layer":
            end = _value(flag, raw, int)
        elif flag == "--triplet_target":
            if raw not in ("student", "teacher"):
                raise ConfigError(f"--triplet_target must be student or teacher, got {raw!r}")
            values["syn_relation_model"] = raw
        elif flag == "--striplet_feature":
            parts = [p for p, word in (("stages", "features"), ("penultimate", "global"),
                                       ("logits", "logits")) if word in raw]
            if not parts:
                raise ConfigError(f"--striplet_feature must name features, global or logits, "
                                  f"got {raw!r}")
            values["stu_relation_feature"] = "+".join(parts)
        elif flag == "--ep_steps":
            steps = _value(flag, raw, int)
            values["_ep_steps"] = steps
        elif flag == "--gram_loss":
            if _value(flag, raw, float) != 0:
                raise ConfigError("--gram_loss is not part of RGAL as published and is not "
                                  "implemented; drop it (0 is accepted)")
        elif flag in ("--act", "--sampling", "--lr_decay_milestones"):
            notes.append(f"{flag} has no effect (the reference code never reads it for RGAL)")
        elif flag == "--balance":
            notes.append("--balance is not an option of the reference code (its parser rejects "
                         "it); ignored")
        elif flag == "--start_epoch":
            notes.append("--start_epoch is ignored: rgal resumes its own runs with --resume")
        elif flag == "--resume":
            raise ConfigError("--resume PATH reads the reference code's checkpoints, which rgal "
                              "cannot load; rgal continues its own runs with --resume (no value)")
        elif flag in ("--fmix", "--evaluate_only", "--pretrained"):
            what = {"--fmix": "FMix mixing of the student's batches",
                    "--evaluate_only": "evaluation only (use `rgal eval`)",
                    "--pretrained": "a pretrained student"}[flag]
            raise ConfigError(f"{flag} ({what}) is not supported")
    ep = values.pop("_ep_steps", values["kd_steps"])
    if ep // values["kd_steps"] != 1:
        raise ConfigError(f"--ep_steps {ep} with --kd_steps {values['kd_steps']} means "
                          f"{ep // values['kd_steps']} synthesis rounds per epoch; rgal runs "
                          "one (synthesis, then kd_steps student steps) per epoch")
    values["relation_stages"] = f"{start}:{end}"
    if "synthesis_batch_size" not in explicit:
        values["synthesis_batch_size"] = values["batch_size"]
    big = "imagenet" in str(values["dataset"])
    values.setdefault("nz", 512 if big else 256)
    values.setdefault("ngf", 128 if big else 64)
    if "teacher_weights" not in explicit:
        values["teacher_weights"] = (f"checkpoints/pretrained/{values['dataset']}_"
                                     f"{values['teacher']}.pth")
    if values.get("method") == "cmi+rgal":
        values["reset_generator"] = True
        if values["w_rel_syn"]:
            notes.append("--cmi: the reference's CMI synthesizer has no synthesis relation "
                          "term; --triplet is set to 0")
        values["w_rel_syn"] = 0.0
    else:
        for key in ("w_cr", "cr_temperature"):
            if key in explicit:
                notes.append(f"--{'cr' if key == 'w_cr' else 'cr_T'} only applies with --cmi; "
                             "ignored")
            values.pop(key, None)
    if ignored:
        notes.insert(0, f"{', '.join(sorted(set(ignored)))}: no meaning here, ignored")
    out = ["distill", *rest]
    for key, value in values.items():
        text = json.dumps(value) if isinstance(value, str) else str(value)  # "2:4" stays text
        out += ["--set", f"{key}={text}"]
    return out, notes
