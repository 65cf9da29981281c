"""The style sheet of the project's HTML pages (standard library only).

Used by the verification report (``components/impl/report.py``) and ``taxifare monitor``'s
page (``serving/monitor_page.py``).
"""

PAGE_CSS = """
:root{color-scheme:light}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:12px 16px;max-width:1100px;
line-height:1.45;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin:.4em 0}h2{font-size:1.15rem;margin:1.4em 0 .5em}
.verdict{border-radius:8px;padding:10px 14px;color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}
.verdict p{margin:.3em 0 0;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.92rem}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
td.detail{overflow-wrap:anywhere;min-width:8em}
tr.model td{font-weight:600}
.pass{color:#1a7f37;font-weight:700}.fail{color:#cf222e;font-weight:700}
figure{margin:12px 0;max-width:100%}
figure img,figure svg{display:block;max-width:100%;height:auto}
#run{font-size:.9rem;color:#57606a;overflow-wrap:anywhere;margin:.2em 0 .8em}
figcaption{font-size:.85rem;color:#57606a}
.plots{display:flex;flex-wrap:wrap;gap:16px}
.plots figure{flex:1 1 320px;min-width:0}
.note{font-size:.85rem;color:#57606a}
td small{color:#57606a;white-space:nowrap}
@media (max-width:600px){body{padding:8px 8px}table{font-size:.78rem}th,td{padding:3px 3px}}
"""
