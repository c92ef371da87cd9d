"""Render the report's markdown as a PDF, with pip packages only.

PDF route (pure pip, no system packages, no browser): Python-Markdown (``tables``
extension) turns report.md into HTML, and fpdf2's ``write_html`` lays it out. Fonts are the
DejaVu TTFs shipped inside matplotlib, so unicode such as ‖ λ μ ≤ — renders (fpdf2's core
fonts are latin-1 only). ``$$...$$`` blocks are rendered to PNG by matplotlib mathtext;
inline ``$...$`` becomes unicode text with <sub>/<sup> (fpdf2 places images as blocks, so
inline images would break the line). report.md keeps the LaTeX, which GitHub renders.
fpdf2's HTML tables accept only plain text in cells and place images as blocks, so the HTML
is post-processed: cell markup is flattened, column widths are measured from the text,
white borders are trimmed off figures, and a paragraph holding several small images is
pasted into one side-by-side PNG with Pillow (large multi-panel figures are stacked).
Headings, table captions and figure captions are kept on the page of what follows them.
"""
from __future__ import annotations

import functools
import hashlib
import html as _html
import re
from pathlib import Path

BODY_PT, TABLE_PT = 10, 8   # font sizes (pt) of running text and of tables
MAX_W_PT = 481.9            # A4 text width with 20 mm margins: (210 - 2*20) mm in pt
MAX_W_MM = 170.0            # the same width in mm
CELL_PAD_MM = 1.5           # table cell padding
MAX_H_PT = 360.0            # figures stay under ~12.7 cm tall so text keeps its place
FULL_PX = 1500              # images this many pixels wide are shown at full text width
ROW_MAX_PX = 1700           # wider pairs (multi-panel figures) are stacked, not put in a row

# =========================================================================== md -> HTML
MATH_RE = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$(?!\d)",
                     re.S)
CODE_RE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
PLACEHOLDER = "MATHPH{}Z"
PLACEHOLDER_RE = re.compile(r"MATHPH(\d+)Z")


def protect_math(md: str) -> tuple[str, list[tuple[bool, str]]]:
    """Replace math spans outside code with placeholders (Markdown would mangle _ and *)."""
    found: list[tuple[bool, str]] = []

    def sub(m):
        display = m.group(1) is not None
        found.append((display, (m.group(1) if display else m.group(2)).strip()))
        token = PLACEHOLDER.format(len(found) - 1)
        return f"\n\n{token}\n\n" if display else token

    pieces = CODE_RE.split(md)       # odd indices are code: leave them alone
    return "".join(p if i % 2 else MATH_RE.sub(sub, p) for i, p in enumerate(pieces)), found


def markdown_to_html(md: str, base: Path, tmp: Path) -> str:
    """report.md -> HTML that fpdf2's write_html can lay out."""
    import markdown  # deferred: only the PDF step needs it

    text, maths = protect_math(md)
    out = markdown.markdown(text, extensions=["tables", "sane_lists"])
    out = restore_math(out, maths, tmp)
    out = re.sub(r"<table>.*?</table>", lambda m: fix_table(m.group(0)), out, flags=re.S)
    out = re.sub(r"<p>((?:\s*<img [^>]*>\s*)+)</p>",
                 lambda m: image_paragraph(m.group(1), base, tmp), out)
    return out


# ---------------------------------------------------------------- math
def restore_math(out: str, maths: list[tuple[bool, str]], tmp: Path) -> str:
    """Put math back: display blocks as rendered images, inline math as unicode text."""
    def block(m):
        display, tex = maths[int(m.group(1))]
        return display_math(tex, tmp) if display else m.group(0)

    out = re.sub(r"<p>\s*MATHPH(\d+)Z\s*</p>", block, out)
    return PLACEHOLDER_RE.sub(lambda m: tex_to_html(maths[int(m.group(1))][1]), out)


def display_math(tex: str, tmp: Path) -> str:
    """Centered image(s) of a display formula; one image per ``\\\\`` line."""
    tex = re.sub(r"\\(begin|end)\{[a-z*]+\}|&", "", tex)   # aligned/cases are not mathtext
    lines = [t.strip() for t in re.split(r"\\\\", tex) if t.strip()]
    return "".join(math_image(t, tmp) for t in lines)


def math_image(tex: str, tmp: Path, size: float = 13, dpi: int = 300) -> str:
    """Render ``tex`` with matplotlib mathtext; fall back to unicode text if unsupported."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.mathtext import math_to_image

    path = tmp / f"math_{hashlib.sha1(tex.encode()).hexdigest()[:12]}.png"
    try:
        math_to_image(f"${tex}$", path, prop=FontProperties(size=size), dpi=dpi,
                      format="png")
    except (ValueError, RuntimeError):
        return f'<p align="center">{tex_to_html(tex)}</p>'
    width_pt = pad_white(path, pad=dpi // 8) * 72 / dpi
    return f'<p align="center"><img src="{path}" width="{min(width_pt, MAX_W_PT):.1f}"></p>'


def pad_white(path: Path, pad: int) -> int:
    """Flatten a transparent PNG onto white with ``pad`` px above and below; returns width.

    mathtext crops tightly, so without the padding a formula touches the lines around it.
    """
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
        out = Image.new("RGB", (im.width, im.height + 2 * pad), "white")
        out.paste(im, (0, pad), mask=im.getchannel("A"))
    out.save(path)
    return out.width


def _symbols() -> dict[str, str]:
    """TeX command -> unicode character, from matplotlib's table plus a few aliases."""
    try:
        from matplotlib._mathtext_data import tex2uni   # private, but stable for years
        table_ = {k: chr(v) for k, v in tex2uni.items()}
    except ImportError:
        table_ = {}
    table_.update({"le": "≤", "ge": "≥", "lVert": "‖", "rVert": "‖", "|": "‖",
                   "{": "{", "}": "}", "%": "%", "$": "$", "_": "_", "#": "#",
                   ",": " ", ";": " ", ":": " ", "!": "", " ": " ", "quad": "  ",
                   "qquad": "   ", "\\": " "})
    return table_


SYMBOLS = _symbols()
TEXT_CMDS = {"text", "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "operatorname",
             "textbf", "textit", "boldsymbol", "bm", "mathcal"}
DROP_CMDS = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr",
             "displaystyle", "limits", "nolimits"}
OPERATOR_NAMES = {"log", "ln", "exp", "sin", "cos", "tan", "max", "min", "arg", "det", "lim",
                  "sup", "inf", "sgn"}
BLACKBOARD = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "Q": "ℚ", "C": "ℂ"}
ACCENTS = {"hat": "\u0302", "bar": "\u0304", "tilde": "\u0303", "vec": "\u20d7",
           "dot": "\u0307"}


def tex_group(s: str, i: int) -> tuple[str, int]:
    """Read one TeX argument at ``i``: a {balanced group}, a \\command, or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return "", i
    if s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
        return s[i + 1:], len(s)
    if s[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.)", s[i:])
        return m.group(0), i + m.end()
    return s[i], i + 1


def _paren(tex: str) -> str:
    """Unicode of ``tex``, parenthesized when longer than one symbol (for a/b, √x)."""
    inner = tex_to_html(tex, top=False)
    return inner if len(re.sub(r"<[^>]+>", "", inner)) <= 1 else f"({inner})"


def tex_command(s: str, i: int) -> tuple[str, int]:
    """Translate the TeX command starting at ``s[i]`` (a backslash)."""
    m = re.match(r"\\([A-Za-z]+|.)", s[i:])
    name, i = m.group(1), i + m.end()
    if name in TEXT_CMDS:
        arg, i = tex_group(s, i)
        return tex_to_html(arg, top=False, keep_spaces=name.startswith("text")), i
    if name == "mathbb":
        arg, i = tex_group(s, i)
        return "".join(BLACKBOARD.get(c, c) for c in arg), i
    if name in ("frac", "dfrac", "tfrac"):
        num, i = tex_group(s, i)
        den, i = tex_group(s, i)
        return f"{_paren(num)}/{_paren(den)}", i
    if name == "sqrt":
        arg, i = tex_group(s, i)
        return f"√{_paren(arg)}", i
    if name in ACCENTS:
        arg, i = tex_group(s, i)
        return tex_to_html(arg, top=False) + ACCENTS[name], i
    if name in DROP_CMDS:
        return "", i + (1 if s[i:i + 1] == "." else 0)   # \left. is an empty delimiter
    if name in OPERATOR_NAMES:   # \log L -> "log L", but \max(x) -> "max(x)"
        nxt = s[i:].lstrip()[:1]
        return name + (" " if nxt.isalnum() or nxt == "\\" else ""), i
    return _html.escape(SYMBOLS.get(name, name)), i


RELATIONS = set("=<>≈≤≥∈∉∝≠→←↦⇒⇔∼≃≡⊂⊆")
BINARY = set("+−±×⋅∘⊙")
OPENERS = set("([{,") | RELATIONS | BINARY   # a sign follows these, not an operand


def _spaced(piece: str, out: list[str]) -> str:
    """TeX-like spacing at the top level: around relations and binary operators, after commas."""
    raw = _html.unescape(piece)
    if raw in RELATIONS:
        return f" {piece} "
    before = _html.unescape(re.sub(r"<[^>]+>", "", "".join(out))).rstrip()
    if raw in BINARY and before and before[-1] not in OPENERS:   # else it is a sign: -3
        return f" {piece} "
    return ", " if raw == "," else piece


def tex_to_html(tex: str, top: bool = True, keep_spaces: bool = False) -> str:
    """Inline TeX -> unicode HTML with <sub>/<sup> (approximate, for running text).

    As in TeX, spaces in the source are ignored (except inside \\text) and spacing is
    added around relations and binary operators, at the top level only.
    """
    out: list[str] = []
    i = 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            piece, i = tex_command(tex, i)
        elif c in "^_":
            arg, i = tex_group(tex, i + 1)
            tag = "sup" if c == "^" else "sub"
            piece = f"<{tag}>{tex_to_html(arg, top=False)}</{tag}>"
        elif c == "{":
            arg, i = tex_group(tex, i)
            piece = tex_to_html(arg, top=False, keep_spaces=keep_spaces)
        else:
            char = {"}": "", "~": " ", "-": "−"}.get(c, c)
            if c.isspace():
                char = " " if keep_spaces else ""
            piece, i = _html.escape(char), i + 1
        out.append(_spaced(piece, out) if top and piece else piece)
    return re.sub(r" {2,}", " ", "".join(out)).strip() if top else "".join(out)


# ---------------------------------------------------------------- tables
SUPERSCRIPT = str.maketrans("0123456789+-−=()nik", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻⁼⁽⁾ⁿⁱᵏ")
SUBSCRIPT = str.maketrans("0123456789+-−=()aeiklmnopst", "₀₁₂₃₄₅₆₇₈₉₊₋₋₌₍₎ₐₑᵢₖₗₘₙₒₚₛₜ")


CELL_RE = re.compile(r"(<t([hd])(?=[\s>])[^>]*>)(.*?)(</t\2>)", re.S)   # not <thead>


def flatten_cell(inner: str) -> str:
    """fpdf2 table cells take plain text only: sub/sup -> unicode, other tags dropped."""
    def script(m):
        text = re.sub(r"<[^>]+>", "", m.group(2))
        mapping, mark = (SUPERSCRIPT, "^") if m.group(1) == "sup" else (SUBSCRIPT, "_")
        mapped = text.translate(mapping)
        return mapped if mapped != text or not text else f"{mark}{text}"

    inner = re.sub(r"<(sup|sub)>(.*?)</\1>", script, inner, flags=re.S)
    inner = re.sub(r'<img [^>]*alt="([^"]*)"[^>]*>', r"[\1]", inner)
    return re.sub(r"<[^>]+>", "", inner).strip()


def _plain(cell: str) -> str:
    return _html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()


@functools.lru_cache(maxsize=1)
def _meter():
    """A blank PDF used only to measure strings in the table font."""
    pdf = make_pdf(None)
    pdf.add_page()
    return pdf


def text_mm(text: str, bold: bool = False) -> float:
    """Width of ``text`` in the table font, in mm."""
    pdf = _meter()
    pdf.set_font("dejavu", "B" if bold else "", TABLE_PT)
    return pdf.get_string_width(text)


def column_widths(table_html: str) -> list[float]:
    """Column widths in mm: fit the longest value and the longest header word.

    Headers may wrap onto about two lines, but never inside a word.
    """
    rows = [[_plain(m[2]) for m in CELL_RE.findall(r)]
            for r in re.findall(r"<tr>(.*?)</tr>", table_html, flags=re.S)]
    if not rows:
        return []
    head, body = rows[0], rows[1:]
    widths = []
    for j, h in enumerate(head):
        longest = max((text_mm(r[j]) for r in body if j < len(r)), default=0)
        word = max((text_mm(w, bold=True) for w in h.split()), default=0)
        need = max(longest, word, text_mm(h, bold=True) / 2, 5)
        widths.append(min(need + 2 * CELL_PAD_MM + 1, 110))
    return widths


def fix_table(table_html: str) -> str:
    """Make Markdown's table HTML acceptable to fpdf2 and readable in a PDF."""
    widths = column_widths(table_html)
    t = re.sub(r'style="text-align: (\w+);"', r'align="\1"', table_html)
    t = re.sub(r"<td>", '<td align="left">', t)   # fpdf2 would justify wrapped cells
    t = CELL_RE.sub(lambda m: m.group(1) + flatten_cell(m.group(3)) + m.group(4), t)
    end = t.index("</tr>")            # only the header row carries the widths
    cells = iter(widths)
    t = re.sub(r"<th(?=[\s>])", lambda m: f'<th width="{next(cells, 10)}%"', t[:end]) + t[end:]
    share = min(100, round(sum(widths) / MAX_W_MM * 100))
    attrs = f'width="{share}%" align="left" cellpadding="{CELL_PAD_MM}"'
    t = t.replace("<table>", f"<table {attrs}>", 1)
    return f'<font size="{TABLE_PT}">{t}</font>'


# ---------------------------------------------------------------- images
def image_paragraph(imgs_html: str, base: Path, tmp: Path) -> str:
    """A paragraph of images -> centered image(s), side by side when they fit in a row."""
    srcs = [base / s for s in re.findall(r'src="([^"]+)"', imgs_html)]
    missing = [p for p in srcs if not p.exists()]
    if missing:   # report.md only links existing files; this guards hand edits
        return "<p>" + ", ".join(f"[missing figure {p.name}]" for p in missing) + "</p>"
    srcs = [trimmed(p, tmp) for p in srcs]
    if len(srcs) > 1 and row_px(srcs) <= ROW_MAX_PX:
        srcs = [side_by_side(srcs, tmp)]
    return "".join(f'<p align="center"><img src="{p}" width="{fit_width(p):.1f}"></p>'
                   for p in srcs)


def trimmed(path: Path, tmp: Path, margin: int = 8) -> Path:
    """Copy of the image without its white border (screenshots often carry a wide one)."""
    from PIL import Image, ImageChops

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if not box or box == (0, 0, *rgb.size):
        return path
    left, top, right, bottom = box
    box = (max(left - margin, 0), max(top - margin, 0),
           min(right + margin, rgb.width), min(bottom + margin, rgb.height))
    out = tmp / f"trim_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}.png"
    rgb.crop(box).save(out)
    return out


def row_px(paths: list[Path]) -> int:
    """Width in px of the images pasted in a row at the height of the tallest."""
    from PIL import Image

    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    h = max(s[1] for s in sizes)
    return sum(round(w * h / sh) for w, sh in sizes)


def side_by_side(paths: list[Path], tmp: Path) -> Path:
    """Paste images into one row at a common height (a small white gap between)."""
    from PIL import Image

    ims = []
    for p in paths:
        with Image.open(p) as im:
            ims.append(im.convert("RGB"))
    h = max(im.height for im in ims)
    ims = [im.resize((round(im.width * h / im.height), h)) for im in ims]
    gap = h // 30
    row = Image.new("RGB", (sum(im.width for im in ims) + gap * (len(ims) - 1), h), "white")
    x = 0
    for im in ims:
        row.paste(im, (x, 0))
        x += im.width + gap
    out = tmp / f"row_{hashlib.sha1(str(paths).encode()).hexdigest()[:12]}.png"
    row.save(out)
    return out


def fit_width(path: Path) -> float:
    """Display width in pt, growing with the pixel width (detail) of the image.

    Small plots get 3/4 of the text width, images of FULL_PX pixels or more the whole
    width, and none grows taller than MAX_H_PT.
    """
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    share = min(1.0, max(0.75, w / FULL_PX))
    return min(MAX_W_PT * share, MAX_H_PT * w / h)


# =========================================================================== HTML -> PDF
def font_dir() -> Path:
    """Folder of the DejaVu TTFs that ship with matplotlib."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def tag_styles() -> dict:
    """Heading, code and paragraph styles for write_html."""
    from fpdf.fonts import FontFace, TextStyle

    blue = "#1f3a60"
    return {
        "h1": TextStyle(font_family="dejavu", font_style="B", font_size_pt=16, color=blue,
                        t_margin=2, b_margin=0.4),
        "h2": TextStyle(font_family="dejavu", font_style="B", font_size_pt=12.5, color=blue,
                        t_margin=6, b_margin=0.35),
        "h3": TextStyle(font_family="dejavu", font_style="B", font_size_pt=11, color=blue,
                        t_margin=4, b_margin=0.2),
        "h4": TextStyle(font_family="dejavu", font_style="B", font_size_pt=10, color=blue,
                        t_margin=3, b_margin=0.2),
        "code": FontFace(family="dejavumono"),
        "pre": TextStyle(font_family="dejavumono", font_size_pt=8.5, t_margin=2),
    }


def make_pdf(banner_text: str | None, title: str = ""):
    """An A4 FPDF with DejaVu fonts, a page header (quick banner) and page numbers."""
    from fpdf import FPDF

    class ReportPDF(FPDF):
        def header(self):
            if banner_text:
                self.set_font("dejavu", "B", 9)
                self.set_text_color(190, 0, 0)
                self.cell(0, 5, banner_text, align="C", new_x="LMARGIN", new_y="NEXT")
                self.ln(2)

        def footer(self):
            self.set_y(-12)
            self.set_font("dejavu", "", 8)
            self.set_text_color(110)
            self.cell(0, 5, f"{title}  ·  page {self.page_no()}", align="C")

    pdf = ReportPDF(format="A4")
    pdf.set_margins(20, 15, 20)
    pdf.set_auto_page_break(True, margin=18)
    fonts = font_dir()
    for style, suffix in [("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")]:
        pdf.add_font("dejavu", style, str(fonts / f"DejaVuSans{suffix}.ttf"))
    for style, suffix in [("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")]:
        pdf.add_font("dejavumono", style, str(fonts / f"DejaVuSansMono{suffix}.ttf"))
    pdf.set_title(title)
    return pdf


VOID_TAGS = {"img", "br", "hr", "input", "meta", "link"}


def top_level_blocks(html: str) -> list[str]:
    """Split HTML into its top-level elements (headings, paragraphs, tables, lists...)."""
    blocks, depth, start = [], 0, 0
    for m in re.finditer(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>", html):
        closing, name, selfclosing = m.groups()
        if name.lower() in VOID_TAGS or selfclosing:
            step = 0
        else:
            step = -1 if closing else 1
        depth += step
        # a block ends where its element closes at depth 0; a lone void tag (<hr>) is one too
        if depth == 0 and (step == -1 or (step == 0 and not html[start:m.start()].strip())):
            blocks.append(html[start:m.end()].strip())
            start = m.end()
    if html[start:].strip():
        blocks.append(html[start:].strip())
    return [b for b in blocks if b]


def sticks_to_next(block: str, nxt: str) -> bool:
    """Blocks that must not end a page: headings, task lines, table captions, and a
    figure followed by its caption."""
    return (bool(re.match(r"<h[1-6][ >]|<p><em>(Task:|[^<]*Table:)", block))
            or ("<img " in block and nxt.startswith("<p><em>Figure:")))


def keep_together(blocks: list[str]) -> list[str]:
    """Join each block with the ones that must share its page."""
    groups: list[str] = []
    for i, block in enumerate(blocks):
        if i and sticks_to_next(blocks[i - 1], block):
            groups[-1] += "\n" + block
        else:
            groups.append(block)
    return groups


def write_block(pdf, html: str, styles: dict) -> None:
    """write_html with the body font and colour reset first."""
    pdf.set_font("dejavu", "", BODY_PT)
    pdf.set_text_color(0)
    pdf.write_html(html, font_family="dejavu", tag_styles=styles)


def fits_on_page(scratch, y: float, html: str, styles: dict) -> bool:
    """Would ``html`` fit below ``y`` without a page break? Tried on a scratch PDF.

    (fpdf2's offset_rendering would do this too, but it deep-copies the document,
    fonts included, for every call.)
    """
    scratch.add_page()
    scratch.set_y(y)
    page = scratch.page
    write_block(scratch, html, styles)
    return scratch.page == page


def write_group(pdf, scratch, html: str, styles: dict) -> None:
    """Render a keep-together group, starting a new page if it would be split there.

    A group taller than a page is left to break normally.
    """
    if pdf.get_y() > pdf.t_margin + 40 and not fits_on_page(scratch, pdf.get_y(), html, styles):
        pdf.add_page()
    write_block(pdf, html, styles)
    pdf.ln(BODY_PT * 0.25)


def render_pdf(html: str, pdf_path: Path, banner_text: str | None, title: str) -> None:
    """Lay out the HTML, each section (<h1>) starting on a new page, and write the PDF."""
    pdf, scratch = make_pdf(banner_text, title), make_pdf(banner_text, title)
    styles = tag_styles()
    for section in re.split(r"(?=<h1[ >])", html):
        if not section.strip():
            continue
        pdf.add_page()
        for group in keep_together(top_level_blocks(section)):
            write_group(pdf, scratch, group, styles)
    pdf.output(str(pdf_path))
