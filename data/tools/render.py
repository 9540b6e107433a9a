"""Render authored request records (JSONL) into the corpus' `.eml` / `.json` files.

Writers author each request as one JSON record: who writes, the subject and the whole body
as a mail client would show it (reply chains and forwards written out), the channel, the
labels. This script only wraps that text into MIME or the e-form contract, choosing header
details, transfer encodings, charsets and HTML markup from a hash of the record id, so that
the corpus exercises the parser the way a real mailbox does. It never writes text of its own.

    python data/tools/render.py RECORDS.jsonl [--root data] [--dry-run]

Each record: id, split (train|validation|test), department, urgency, channel
(email|html_email|eform), sender_name, sender_email, subject, body; optional: date (ISO
8601), commune, form_id, form_category, form_fields, lang, scenario (not rendered).
Files go to ROOT/<split>/<department>/<department>-<split>-NNN.<ext>, numbered after the
files already there, and their labels are appended to that folder's labels.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import sys
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

SPLITS = ("train", "validation", "test")
CHANNELS = ("email", "html_email", "eform")
REQUIRED = ("id", "split", "department", "urgency", "channel", "body")
PARIS = timezone(timedelta(hours=1))
COMMUNES = (
    ("Saint-Aubin-sur-Loire", "ville-saint-aubin.example"),
    ("Montreuil-le-Vieux", "mairie-montreuil-le-vieux.example"),
    ("Castelnau-d'Orb", "castelnau-orb.example"),
    ("Plouzané-les-Grèves", "plouzane-les-greves.example"),
    ("Villeneuve-sur-Aisne", "villeneuve-aisne.example"),
    ("Saint-Genis-des-Monts", "saintgenis.example"),
)
MAILERS = (
    None,
    "iPhone Mail (22A3354)",
    "Microsoft Outlook 16.0",
    "Mozilla Thunderbird 128.5.0",
    "Roundcube Webmail/1.6.9",
    "Android Mail 2024.11",
    None,
)


def _pick(record_id: str, salt: str, modulo: int) -> int:
    digest = hashlib.sha256(f"{salt}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % modulo


def _date(record: dict[str, object]) -> datetime:
    if record.get("date"):
        value = datetime.fromisoformat(str(record["date"]))
        return value if value.tzinfo else value.replace(tzinfo=PARIS)
    rid = str(record["id"])
    start = datetime(2024, 9, 1, 7, 0, tzinfo=PARIS)
    return start + timedelta(days=_pick(rid, "day", 800), minutes=_pick(rid, "minute", 900))


def _html(body: str, style: int) -> str:
    paragraphs = [p for p in body.split("\n\n") if p.strip()]
    rendered = []
    for paragraph in paragraphs:
        lines = "<br>\n".join(html.escape(line) for line in paragraph.splitlines())
        if style == 0:  # Outlook-like
            span = f'<span style="font-family:Calibri">{lines}</span>'
            rendered.append(f'<p class="MsoNormal">{span}</p>')
        elif style == 1:  # webmail divs
            rendered.append(f"<div>{lines}</div><div><br></div>")
        else:
            rendered.append(f"<p>{lines}</p>")
    head = '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    return f"<html><head>{head}</head><body>\n" + "\n".join(rendered) + "\n</body></html>\n"


def _charset(record_id: str, text: str) -> str:
    choice = _pick(record_id, "charset", 20)
    for charset, share in (("iso-8859-1", 2), ("windows-1252", 1)):
        if choice < share:
            try:
                text.encode(charset)
            except UnicodeEncodeError:
                return "utf-8"
            return charset
        choice -= share
    return "utf-8"


def render_email(record: dict[str, object]) -> bytes:
    rid = str(record["id"])
    commune, domain = COMMUNES[_pick(rid, "commune", len(COMMUNES))]
    commune = str(record.get("commune") or commune)
    mailbox = ("contact", "accueil", "mairie")[_pick(rid, "mailbox", 3)]
    message = EmailMessage(policy=SMTP)
    name = str(record.get("sender_name") or "")
    address = str(record["sender_email"])
    message["From"] = f"{name} <{address}>" if name else address
    message["To"] = f"Mairie de {commune} <{mailbox}@{domain}>"
    message["Subject"] = str(record.get("subject") or "")
    message["Date"] = format_datetime(_date(record))
    token = hashlib.sha256(rid.encode()).hexdigest()[:24]
    message["Message-ID"] = f"<{token}@{address.rsplit('@', 1)[-1]}>"
    mailer = MAILERS[_pick(rid, "mailer", len(MAILERS))]
    if mailer:
        message["X-Mailer"] = mailer
    body = str(record["body"]).replace("\r\n", "\n").strip() + "\n"
    charset = _charset(rid, body)
    encoding = ("quoted-printable", "quoted-printable", "8bit", "base64")[_pick(rid, "cte", 4)]
    if charset != "utf-8" and encoding == "8bit":
        encoding = "quoted-printable"
    if record["channel"] == "html_email":
        markup = _html(body, _pick(rid, "html", 3))
        if _pick(rid, "html-only", 10) < 3:
            message.set_content(markup, subtype="html", charset="utf-8", cte="quoted-printable")
        else:
            message.set_content(body, charset=charset, cte=encoding)
            message.add_alternative(markup, subtype="html", charset="utf-8", cte="quoted-printable")
    else:
        message.set_content(body, charset=charset, cte=encoding)
    return message.as_bytes()


def render_eform(record: dict[str, object]) -> bytes:
    submitter = {
        "name": record.get("sender_name") or None,
        "email": record.get("sender_email") or None,
    }
    fields = dict(record.get("form_fields") or {})  # type: ignore[call-overload]
    if record.get("form_category"):
        fields = {"categorie": str(record["form_category"]), **fields}
    document: dict[str, object] = {
        "form_id": str(record.get("form_id") or "contact"),
        "submitted_at": _date(record).isoformat(),
        "submitter": {k: v for k, v in submitter.items() if v},
    }
    if record.get("subject"):
        document["subject"] = str(record["subject"])
    document["message"] = str(record["body"]).strip()
    document["fields"] = {str(k): str(v) for k, v in fields.items()}
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def check(record: dict[str, object], departments: set[str], urgencies: set[str]) -> str | None:
    missing = [key for key in REQUIRED if not record.get(key)]
    if missing:
        return f"missing {', '.join(missing)}"
    if record["split"] not in SPLITS:
        return f"split {record['split']!r}"
    if record["department"] not in departments:
        return f"department {record['department']!r}"
    if record["urgency"] not in urgencies:
        return f"urgency {record['urgency']!r}"
    if record["channel"] not in CHANNELS:
        return f"channel {record['channel']!r}"
    if record["channel"] != "eform" and "@" not in str(record.get("sender_email") or ""):
        return "an email needs sender_email"
    return None


def _taxonomy(root: Path) -> tuple[set[str], set[str]]:
    import yaml

    data = yaml.safe_load((root.parent / "config" / "taxonomy.yaml").read_text("utf-8"))
    return set(data["departments"]), set(data["urgencies"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, nargs="+")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--dry-run", action="store_true", help="check the records only")
    args = parser.parse_args(argv)
    departments, urgencies = _taxonomy(args.root)
    records: list[dict[str, object]] = []
    errors = 0
    seen: set[str] = set()
    for path in args.records:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                print(f"{path}:{number}: not JSON: {exc}", file=sys.stderr)
                errors += 1
                continue
            problem = check(record, departments, urgencies)
            if problem is None and record["id"] in seen:
                problem = f"duplicate id {record['id']!r}"
            if problem:
                print(f"{path}:{number}: {problem}", file=sys.stderr)
                errors += 1
                continue
            seen.add(str(record["id"]))
            records.append(record)
    if errors:
        print(f"{errors} bad record(s); nothing written", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"{len(records)} record(s) OK")
        return 0
    for record in records:
        folder = args.root / str(record["split"]) / str(record["department"])
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{record['department']}-{record['split']}-"
        taken = [
            int(p.stem.rsplit("-", 1)[1])
            for p in folder.glob(prefix + "*")
            if p.stem.rsplit("-", 1)[1].isdigit()
        ]
        number = max(taken, default=0) + 1
        is_form = record["channel"] == "eform"
        name = f"{prefix}{number:03d}.{'json' if is_form else 'eml'}"
        (folder / name).write_bytes(render_eform(record) if is_form else render_email(record))
        label = {"file": name, "department": record["department"], "urgency": record["urgency"]}
        with (folder / "labels.jsonl").open("a", encoding="utf-8") as labels:
            labels.write(json.dumps(label, ensure_ascii=False) + "\n")
    print(f"{len(records)} request(s) written under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
