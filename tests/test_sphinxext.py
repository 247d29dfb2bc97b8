"""The verification report's collector, on a hand-made doctree shaped like MyST-NB's."""

import json
from types import SimpleNamespace

from docutils import nodes
from docutils.utils import new_document

from kexue import claims, sphinxext


def _doctree_with_bundle(plain_text: str) -> nodes.document:
    doc = new_document("test")
    bundle = nodes.container(nb_element="mime_bundle")
    html = nodes.container(mime_type="text/html")
    html += nodes.raw("", "<table></table>", format="html")
    plain = nodes.container(mime_type="text/plain")
    plain += nodes.literal_block(plain_text, plain_text)
    bundle += html
    bundle += plain
    doc += bundle
    return doc


def test_collect_finds_the_claims_json_and_purge_forgets_it():
    payload = {"chapter": "x", "claims": [{"id": "N1", "kind": "numeric", "passed": True}], "run": {}, "seconds": 1.0}
    env = SimpleNamespace(docname="chapters/part/x")
    app = SimpleNamespace(env=env)
    sphinxext.collect_claims(app, _doctree_with_bundle(claims.REPORT_MARKER + json.dumps(payload)))
    assert env.kexue_claims["chapters/part/x"] == payload
    sphinxext.purge(app, env, "chapters/part/x")
    assert "chapters/part/x" not in env.kexue_claims


def test_collect_ignores_other_outputs_and_drops_stale_records():
    env = SimpleNamespace(docname="chapters/part/y", kexue_claims={"chapters/part/y": {"old": True}})
    app = SimpleNamespace(env=env)
    sphinxext.collect_claims(app, _doctree_with_bundle("just some text output"))
    assert "chapters/part/y" not in env.kexue_claims
