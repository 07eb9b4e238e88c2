"""Bulk import/export of articles as JSONL or as the CSV a support team keeps in a spreadsheet.

CSV conventions (what people type into cells): list cells split on new lines, ``|`` or Chinese/
English commas and semicolons (variants on new lines or ``|`` only, since a question may contain a
comma); category paths use ``/`` or ``>``. Headers may be English field names or the Chinese ones
a team would write (标题, 正文, 相似问法, 分类, 标签 …), and status may be 草稿/待审核/已发布.
Files exported for Excel carry a UTF-8 BOM; imports accept either.

Parsing never stops at the first problem: every row is checked and every error reported with its
row number (the spreadsheet row for CSV, the line for JSONL). The caller applies the rows only if
there are no errors at all.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from typing import Literal

import msgspec

from .articles import (
    CONTENT_FIELDS,
    Article,
    ArticleContent,
    ArticleTranslation,
    Limits,
    MediaRef,
    clean_content,
    validate_content,
)

Format = Literal["jsonl", "csv"]
MAX_ROWS = 5000

CSV_COLUMNS = ("id", "version", "status", "title", "body", "variants", "category", "tags", "keywords", "channels",
               "boost", "intents", "products", "pages", "media", "translations")
HEADER_ALIASES = {
    "编号": "id", "文章id": "id", "版本": "version", "状态": "status", "标题": "title", "问题": "title",
    "正文": "body", "内容": "body", "答案": "body", "相似问法": "variants", "相似问题": "variants",
    "分类": "category", "标签": "tags", "关键词": "keywords", "渠道": "channels", "优先级": "boost",
    "权重": "boost", "关联意图": "intents", "意图": "intents", "商品": "products", "页面": "pages",
    "附件": "media", "媒体": "media",
}
STATUS_ALIASES = {"草稿": "draft", "待审核": "in_review", "审核中": "in_review", "已发布": "published",
                  "发布": "published", "已归档": "archived"}
READ_ONLY = {"created_at", "updated_at", "created_by", "updated_by", "live_version"}
_LIST_SPLIT = re.compile(r"[\n|,，、;；]")
_VARIANT_SPLIT = re.compile(r"[\n|]")
_CATEGORY_SPLIT = re.compile(r"\s*[/>／＞]\s*")


class RowError(msgspec.Struct, kw_only=True):
    row: int
    message: str
    field: str | None = None
    id: str | None = None


class ImportRow(msgspec.Struct, kw_only=True):
    row: int
    content: ArticleContent
    id: str | None = None
    version: int | None = None
    status: str | None = None


class ImportReport(msgspec.Struct, kw_only=True):
    ok: bool
    dry_run: bool
    rows: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = msgspec.field(default_factory=list)
    ids: list[str] = msgspec.field(default_factory=list)


def _split(value: str, pattern: re.Pattern) -> list[str]:
    return [p.strip() for p in pattern.split(value) if p.strip()]


def _row_from_mapping(obj: dict, row: int, limits: Limits, errors: list[RowError]) -> ImportRow | None:
    """Shared checks for one row given as a dict of field → value (already list-split for CSV)."""
    before = len(errors)
    article_id = obj.pop("id", None)
    if article_id is not None and (not isinstance(article_id, str) or not article_id.strip()):
        errors.append(RowError(row=row, field="id", message="must be a non-empty string"))
        article_id = None
    article_id = article_id.strip() if isinstance(article_id, str) else None
    version = obj.pop("version", None)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        errors.append(RowError(row=row, field="version", id=article_id, message="must be a positive integer"))
    status = obj.pop("status", None)
    if status is not None:
        status = STATUS_ALIASES.get(status, status)
        if status not in ("draft", "in_review", "published"):
            errors.append(RowError(row=row, field="status", id=article_id,
                                   message="must be draft, in_review or published (archive articles one by one)"))
    for key in READ_ONLY:
        obj.pop(key, None)
    unknown = sorted(set(obj) - set(CONTENT_FIELDS))
    if unknown:
        errors.append(RowError(row=row, field=unknown[0], id=article_id, message=f"unknown field(s): {unknown}"))
        return None
    try:
        content = clean_content(msgspec.convert(obj, ArticleContent))
    except msgspec.ValidationError as exc:
        errors.append(RowError(row=row, id=article_id, message=str(exc)))
        return None
    for e in validate_content(content, limits):
        errors.append(RowError(row=row, field=e.field, id=article_id, message=e.message))
    if len(errors) > before:
        return None
    return ImportRow(row=row, content=content, id=article_id, version=version, status=status)


def parse_jsonl(data: bytes, limits: Limits) -> tuple[list[ImportRow], list[RowError]]:
    rows: list[ImportRow] = []
    errors: list[RowError] = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            errors.append(RowError(row=lineno, message=f"not a JSON line: {exc}"))
            continue
        if not isinstance(obj, dict):
            errors.append(RowError(row=lineno, message="expected a JSON object"))
            continue
        parsed = _row_from_mapping(obj, lineno, limits, errors)
        if parsed:
            rows.append(parsed)
    return rows, errors


def parse_csv(data: bytes, limits: Limits) -> tuple[list[ImportRow], list[RowError]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [RowError(row=0, message=f"the file is not UTF-8 (save it as 'CSV UTF-8'): {exc}")]
    # a field may be as long as the whole body (the body limit bounds it); the csv module's default
    # (131,072 characters) would fail a long article with an exception instead of a row error
    if csv.field_size_limit() < len(text) + 1:
        csv.field_size_limit(len(text) + 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse_csv_rows(reader, limits)
    except csv.Error as exc:
        return [], [RowError(row=reader.line_num, message=f"malformed CSV: {exc}")]


def _parse_csv_rows(reader, limits: Limits) -> tuple[list[ImportRow], list[RowError]]:
    header = next(reader, None)
    if not header:
        return [], [RowError(row=1, message="empty file: expected a header row")]
    columns = [HEADER_ALIASES.get(h.strip().lower(), HEADER_ALIASES.get(h.strip(), h.strip().lower())) for h in header]
    errors: list[RowError] = []
    unknown = [h for h, c in zip(header, columns, strict=True) if c not in CSV_COLUMNS and c not in READ_ONLY and c]
    if unknown:
        return [], [RowError(row=1, message=f"unknown column(s) {unknown}; expected {list(CSV_COLUMNS)}")]
    if "title" not in columns:
        return [], [RowError(row=1, field="title", message="a `title` (标题) column is required")]
    rows: list[ImportRow] = []
    for rowno, cells in enumerate(reader, 2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            errors.append(RowError(row=rowno, message=f"{len(cells)} cells but {len(columns)} columns"))
            continue
        obj: dict[str, object] = {}
        bad = False
        for col, cell in zip(columns, cells, strict=False):
            cell = cell.strip()
            if not col or col in READ_ONLY or cell == "":
                continue
            if col == "version":
                if not cell.isdigit():
                    errors.append(RowError(row=rowno, field="version", message="must be a positive integer"))
                    bad = True
                    continue
                obj[col] = int(cell)
            elif col == "boost":
                try:
                    obj[col] = float(cell)
                except ValueError:
                    errors.append(RowError(row=rowno, field="boost", message="must be a number between -1 and 1"))
                    bad = True
            elif col == "variants":
                obj[col] = _split(cell, _VARIANT_SPLIT)
            elif col == "category":
                obj[col] = _split(cell, _CATEGORY_SPLIT)
            elif col == "media":
                try:
                    obj[col] = msgspec.to_builtins(msgspec.json.decode(cell, type=list[MediaRef]))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    errors.append(RowError(row=rowno, field="media",
                                           message=f"must be a JSON list of {{kind, url, title}}: {exc}"))
                    bad = True
            elif col == "translations":
                try:
                    obj[col] = msgspec.to_builtins(msgspec.json.decode(cell, type=dict[str, ArticleTranslation]))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    errors.append(RowError(row=rowno, field="translations",
                                           message=f"must be a JSON object {{language: {{title, body, variants}}}}: {exc}"))
                    bad = True
            elif col in ("tags", "keywords", "channels", "intents", "products", "pages"):
                obj[col] = _split(cell, _LIST_SPLIT)
            else:
                obj[col] = cell
        if bad:
            continue
        if "title" not in obj:
            errors.append(RowError(row=rowno, field="title", id=obj.get("id"), message="must not be empty"))
            continue
        parsed = _row_from_mapping(obj, rowno, limits, errors)
        if parsed:
            rows.append(parsed)
    return rows, errors


def parse_import(data: bytes, fmt: Format, limits: Limits) -> tuple[list[ImportRow], list[RowError]]:
    """Parse and validate every row; also reports ids that occur twice in the file."""
    rows, errors = parse_jsonl(data, limits) if fmt == "jsonl" else parse_csv(data, limits)
    if len(rows) + len(errors) > MAX_ROWS:
        return [], [RowError(row=0, message=f"more than {MAX_ROWS} rows; split the file")]
    first: dict[str, int] = {}
    for r in rows:
        if r.id is None:
            continue
        if r.id in first:
            errors.append(RowError(row=r.row, field="id", id=r.id, message=f"duplicate id (also on row {first[r.id]})"))
        else:
            first[r.id] = r.row
    errors.sort(key=lambda e: e.row)
    return rows, errors


def _export_row(a: Article) -> dict[str, object]:
    out: dict[str, object] = {"id": a.id, "version": a.version, "status": a.status}
    out.update(msgspec.to_builtins(a.content()))
    return out


def export_jsonl(articles: Iterable[Article]) -> bytes:
    return b"".join(json.dumps(_export_row(a), ensure_ascii=False).encode("utf-8") + b"\n" for a in articles)


def export_csv(articles: Iterable[Article]) -> bytes:
    """CSV with a BOM so Excel opens Chinese text correctly; lists one item per line in a cell."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for a in articles:
        writer.writerow([
            a.id, a.version, a.status, a.title, a.body, "\n".join(a.variants), " / ".join(a.category),
            ", ".join(a.tags), ", ".join(a.keywords), ", ".join(a.channels), a.boost if a.boost else "",
            ", ".join(a.intents), ", ".join(a.products), ", ".join(a.pages),
            msgspec.json.encode(a.media).decode() if a.media else "",
            msgspec.json.encode(a.translations).decode() if a.translations else "",
        ])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
