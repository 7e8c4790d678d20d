"""``imagenet52p criteria`` and ``imagenet52p layers MODEL``: what the pruning library offers, from the library.

``criteria`` lists every registered criterion (:func:`pruning.list_criteria`) with what it needs (weights,
activations, gradients...), whether it must be given a class subset, and its options with their defaults.
``layers MODEL`` lists a model's prunable convs (name, filters, whether an activation follows) and which
layer protocols (:data:`pruning.PROTOCOLS`) target them, for a model built with random weights.
"""

from __future__ import annotations

import click


@click.command("criteria")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def criteria_cmd(as_json: bool) -> None:
    """List the registered filter-importance criteria, what each needs, and its options."""
    import json

    import pruning

    rows = []
    for name in pruning.list_criteria():
        c = pruning.get_criterion(name)
        rows.append({"name": name, "needs": c.needs, "requires_classes": c.requires_classes,
                     "options": dict(c.defaults), "doc": c.doc.strip().splitlines()[0] if c.doc else ""})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width, needs = max(len(r["name"]) for r in rows), max(len(r["needs"]) for r in rows)
    for r in rows:
        opts = ", ".join(f"{k}={v!r}" for k, v in r["options"].items()) or "-"
        extra = "; needs a class subset (--classes)" if r["requires_classes"] else ""
        click.echo(f"{r['name']:<{width}}  needs {r['needs']:<{needs}}  options {opts}{extra}")
    click.echo(f"\n{len(rows)} criteria; definitions: docs/pruning.md")


@click.command("layers")
@click.argument("model")
@click.option("--num-classes", type=int, default=1000, show_default=True, help="outputs of the model as built")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def layers_cmd(model: str, num_classes: int, as_json: bool) -> None:
    """List MODEL's prunable convs (last to first) and the layer protocols that target each."""
    import json

    import pruning
    from pruning.loop import make_model

    try:
        net = make_model(model, num_classes, seed=0)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MODEL") from None
    convs = dict(net.named_modules())
    try:
        every = pruning.prunable_layers(net, "all")
    except ValueError as exc:  # no conv this library can prune (a transformer, an MLP-mixer)
        raise click.BadParameter(str(exc), param_hint="MODEL") from None
    targeted = {}
    for protocol in pruning.PROTOCOLS:
        try:
            targeted[protocol] = set(pruning.prunable_layers(net, protocol))
        except ValueError:  # a protocol written for another architecture
            targeted[protocol] = set()
    refs = {r.name: r for r in pruning.resolve_layers(net, every)}
    rows = [{"name": n, "filters": int(convs[n].out_channels), "activation": bool(refs[n].has_activation),
             "protocols": [p for p in pruning.PROTOCOLS if n in targeted[p]]}
            for n in every]
    if as_json:
        click.echo(json.dumps({"model": model, "layers": rows}, indent=1))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        act = "" if r["activation"] else "  (no activation after it: activation criteria refuse it)"
        click.echo(f"{r['name']:<{width}}  {r['filters']:>5} filters  {', '.join(r['protocols'])}{act}")
    counts = ", ".join(f"{p}: {len(targeted[p])}" for p in pruning.PROTOCOLS)
    click.echo(f"\n{model}: {len(rows)} prunable convs, last to first; per protocol: {counts}")
