"""Small fixes to the HTML that Jupyter Book 1 generates.

sphinx-thebe (always loaded by Jupyter Book 1) registers its configuration script once per
reading pass; when Sphinx reads the sources twice (the bibliography makes it do so), every page
declares ``const THEBE_JS_URL`` twice and the browser reports a SyntaxError. Identical scripts
are emitted once here (an inline script's filename is None or "" depending on who added it).
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""),  # inline scripts: None or ""
                tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    # Early (priority 100): a handler that returns a template name stops the later ones.
    app.connect("html-page-context", _unique_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
