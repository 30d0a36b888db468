"""What ``headstart serve`` shows people and tools: the page at ``/`` (drop or pick images, see their predictions) and
the OpenAPI description at ``/openapi.json``."""

from __future__ import annotations

PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8><title>headstart serve</title>
<meta name=viewport content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}
#drop{border:2px dashed #888;border-radius:8px;padding:2rem;text-align:center;cursor:pointer}
#drop.over{background:#eef}
.result{display:flex;gap:1rem;align-items:flex-start;border-bottom:1px solid #ddd;padding:.6rem 0}
.result img{width:112px;height:112px;object-fit:cover;border-radius:4px}
.label{font-weight:600;font-size:1.1rem}.bad{color:#a00}.unfamiliar{color:#a60;font-weight:600}
table{border-collapse:collapse}td{padding:0 .6rem 0 0}
</style></head><body>
<h1>headstart serve</h1>
<div id=drop>Drop images here, or <label><u>pick them</u>
<input id=files type=file accept="image/*" multiple hidden></label></div>
<div id=status></div><div id=results></div>
<script>
const drop = document.getElementById('drop'), status = document.getElementById('status');
const results = document.getElementById('results');
function esc(s) { const d = document.createElement('div'); d.textContent = s; return d.innerHTML; }
async function send(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append('files', f, f.name);
  status.textContent = 'predicting ' + files.length + ' image(s)...';
  let body;
  try {
    const r = await fetch('predict', {method: 'POST', body: form});
    body = await r.json();
    if (!body.predictions) { status.textContent = 'refused: ' + (body.error || r.status); return; }
  } catch (e) { status.textContent = 'failed: ' + e; return; }
  status.textContent = body.model + ': ' + body.predictions.length + ' answer(s)';
  body.predictions.forEach((p, i) => {
    const row = document.createElement('div'); row.className = 'result';
    const url = URL.createObjectURL(files[i]);
    let html = '<img alt="" src="' + url + '"><div><div>' + esc(p.path || 'image') + '</div>';
    if (p.error) { html += '<div class=bad>' + esc(p.error) + '</div>'; }
    else {
      html += '<div class=label>' + esc(p.label) + '</div><table>';
      for (const [name, prob] of Object.entries(p.probabilities).slice(0, 5))
        html += '<tr><td>' + esc(name) + '</td><td>' + prob.toFixed(3) + '</td></tr>';
      html += '</table>';
      if (p.unfamiliar) html += '<div class=unfamiliar>unfamiliar: unlike the training images (familiarity '
        + p.familiarity.toFixed(3) + ')</div>';
    }
    row.innerHTML = html + '</div>'; results.prepend(row);
  });
}
document.getElementById('files').addEventListener('change', e => send([...e.target.files]));
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => { e.preventDefault(); drop.classList.remove('over');
  send([...e.dataTransfer.files]); });
</script></body></html>"""

_PREDICTION = {
    "type": "object",
    "properties": {
        "path": {"type": ["string", "null"], "description": "the file name as sent (null for a raw body)"},
        "label": {"type": "string"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
        "familiarity": {"type": "number"},
        "unfamiliar": {"type": "boolean"},
        "error": {"type": "string", "description": "why this image could not be used"},
        "status": {"type": "integer"},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "headstart serve", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/predict": {"post": {
            "summary": "Predict one or more images, answered in the order sent",
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
                "image/*": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": {"description": "answers (an unusable image carries its error)", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "model": {"type": "string"}, "predictions": {"type": "array", "items": _PREDICTION}}}}}},
                **{code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
                   for code, text in (("400", "malformed request"), ("401", "missing or wrong token"),
                                      ("408", "body too slow"), ("413", "body too large"),
                                      ("415", "not an image or multipart body"), ("422", "no usable image"),
                                      ("503", "busy: retry after Retry-After seconds"))}}}},
        "/healthz": {"get": {"summary": "Alive", "security": [], "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Model loaded", "responses": {"200": {"description": "ready"},
                                                                      "503": {"description": "starting"}}}},
        "/metrics": {"get": {"summary": "Prometheus text", "responses": {"200": {"description": "metrics"}}}},
        "/": {"get": {"summary": "A page to drop images on", "responses": {"200": {"description": "HTML"}}}},
    },
}
