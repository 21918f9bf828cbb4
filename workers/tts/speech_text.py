"""Text as a person would say it: what the voice reads must never be markup, emoji or raw digits.

Piper (espeak-ng) and CSM both read "$12.50" or "555-0142" badly ("dollar twelve point five
zero", "five hundred fifty-five minus one hundred forty-two"), so sentences are rewritten before
synthesis. Order matters: markup and emoji first (they hide tokens), then the patterns that
contain digits from the most specific (phone numbers, money, times) to plain numbers last.
Standard library only.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_DIGIT_WORDS = dict(zip("0123456789", _ONES[:10], strict=True))


def number_words(n: int) -> str:
    """Cardinal: 1205 -> "one thousand two hundred five"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_words(high)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """Ordinal: 22 -> "twenty-second"."""
    words = number_words(n)
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_words(n: int) -> str:
    """1999 -> "nineteen ninety-nine", 2024 -> "twenty twenty-four", 2005 -> "two thousand five"."""
    high, low = divmod(n, 100)
    if 2000 <= n < 2010 or low == 0 and high % 10 == 0:
        return number_words(n)
    if low == 0:
        return f"{number_words(high)} hundred"
    return f"{number_words(high)} {'oh ' + _ONES[low] if low < 10 else number_words(low)}"


def digits_words(digits: str) -> str:
    """Digit by digit: "0142" -> "zero one four two"."""
    return " ".join(_DIGIT_WORDS[d] for d in digits if d in _DIGIT_WORDS)


# ---------------------------------------------------------------- markup and emoji

_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_URL = re.compile(r"https?://\S+")
_MD_MARKS = re.compile(r"(\*\*|__|\*|`+|~~|^#{1,6}\s*|^\s*>\s?|^\s*[-+*]\s+|^\s*\d+\.\s+)", re.MULTILINE)
_EMOJI_EXTRA = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}  # joiner, variation selectors, keycap


def strip_markup(text: str) -> str:
    """Drop Markdown/HTML markup, links' targets, URLs and emoji; keep the words."""
    text = _MD_LINK.sub(r"\1", text)
    text = _HTML_TAG.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _MD_MARKS.sub(" ", text)
    return "".join(
        " " if unicodedata.category(ch) in ("So", "Cs", "Co") or ord(ch) in _EMOJI_EXTRA
        or 0x1F3FB <= ord(ch) <= 0x1F3FF else ch
        for ch in text
    )


# ---------------------------------------------------------------- patterns with digits

_PHONE = re.compile(
    r"(?<![\w.$£€])(\+\d{1,3}[\s.-]?)?(\(\d{3}\)\s?|\d{3}[\s.-])(\d{3}[\s.-])?\d{4}(?![\w.]*\d)"
)
_MONEY = re.compile(r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?:\s?(million|billion|thousand|k)\b)?")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?:\s?([AaPp])\.?\s?[Mm]\.?(?![A-Za-z]))?")
_AMPM = re.compile(r"\b(\d{1,2})\s?([AaPp])\.?\s?[Mm]\b\.?")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_NUMBER_SIGN = re.compile(r"#\s?(\d+)")
_YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b(?![.,]\d)")
_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.]*\d)")
_INTEGER = re.compile(r"(?<![\d])(\d{1,3}(?:,\d{3})+|\d+)(?![\d])")
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}


def _phone(m: re.Match[str]) -> str:
    groups = [g for g in re.split(r"[^\d]+", m.group(0).replace("+", " plus ")) if g]
    spoken = ", ".join(digits_words(g) for g in groups)
    return ("plus " if m.group(0).startswith("+") else "") + spoken


def _money(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    scale = m.group(4)
    if scale:  # "$2.5 million" -> "two point five million dollars"
        amount = number_words(whole) + (f" point {digits_words(m.group(3))}" if m.group(3) else "")
        return f"{amount} {'thousand' if scale == 'k' else scale} {many}"
    cents = int((m.group(3) or "0").ljust(2, "0"))
    parts = []
    if whole or not cents:
        parts.append(f"{number_words(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{number_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _clock(hour: int, minute: int, meridiem: str | None) -> str:
    if meridiem is None and hour >= 13:  # 24-hour clock: say it the 12-hour way
        hour, meridiem = hour - 12, "p"
    spoken_hour = number_words(12 if hour == 0 else hour)
    if minute == 0:
        words = spoken_hour if meridiem else f"{spoken_hour} o'clock"
    elif minute < 10:
        words = f"{spoken_hour} oh {_ONES[minute]}"
    else:
        words = f"{spoken_hour} {number_words(minute)}"
    return words + (f" {meridiem.upper()} M" if meridiem else "")


def _time(m: re.Match[str]) -> str:
    spoken = _clock(int(m.group(1)), int(m.group(2)), m.group(3).lower() if m.group(3) else None)
    return spoken + ("." if m.group(0).endswith(".") else "")  # "pm." may also end the sentence


def _ampm(m: re.Match[str]) -> str:
    return _clock(int(m.group(1)), 0, m.group(2).lower()) + ("." if m.group(0).endswith(".") else "")


# ---------------------------------------------------------------- abbreviations

_TITLES = {"dr": "Doctor", "mr": "Mister", "mrs": "Missus", "ms": "Miz", "prof": "Professor", "st": "Saint",
           "sr": "Senior", "jr": "Junior", "capt": "Captain", "gen": "General", "sgt": "Sergeant"}
_ADDRESS = {"dr": "Drive", "st": "Street"}
_ABBREVIATIONS = {
    "ave": "Avenue", "blvd": "Boulevard", "rd": "Road", "apt": "Apartment", "dept": "Department",
    "approx": "approximately", "vs": "versus", "etc": "et cetera", "inc": "Incorporated", "ltd": "Limited",
    "co": "Company", "min": "minutes", "mins": "minutes", "hr": "hour", "hrs": "hours", "sec": "seconds",
    "no": "number", "tel": "telephone", "ext": "extension", "mon": "Monday", "tue": "Tuesday",
    "wed": "Wednesday", "thu": "Thursday", "fri": "Friday", "sat": "Saturday", "sun": "Sunday",
    "jan": "January", "feb": "February", "mar": "March", "apr": "April", "jun": "June", "jul": "July",
    "aug": "August", "sep": "September", "sept": "September", "oct": "October", "nov": "November",
    "dec": "December",
}
_LATIN = {"e.g.": "for example", "i.e.": "that is", "a.m.": "A M", "p.m.": "P M"}
_ABBREV = re.compile(r"\b([A-Za-z]{2,5})\.(?=\s+(\S)|$|[,;:)])")
_LATIN_RE = re.compile("|".join(re.escape(k) for k in _LATIN), re.IGNORECASE)


def _abbreviation(m: re.Match[str]) -> str:
    key, following = m.group(1).lower(), m.group(2)
    next_is_name = following is not None and following[0].isupper()
    if key in _TITLES and (next_is_name or key not in _ADDRESS):
        return _TITLES[key]
    if key in _ADDRESS:
        return _ADDRESS[key] + ("." if following is None or next_is_name else "")
    if key == "no" and not (following or "").isdigit():
        return m.group(0)  # "No." at a sentence end is the word no
    if key in _ABBREVIATIONS:
        return _ABBREVIATIONS[key] + ("." if following is None else "")
    return m.group(0)


# ---------------------------------------------------------------- the whole pipeline

_SPACES = re.compile(r"[ \t\r\n]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def speakable(text: str) -> str:
    """Rewrite one sentence for a voice: no markup, no emoji, numbers and symbols in words."""
    text = strip_markup(text)
    text = _LATIN_RE.sub(lambda m: _LATIN[m.group(0).lower()], text)
    text = _ABBREV.sub(_abbreviation, text)
    text = _PHONE.sub(_phone, text)
    text = _MONEY.sub(_money, text)
    text = _TIME.sub(_time, text)
    text = _AMPM.sub(_ampm, text)
    text = _PERCENT.sub(lambda m: f"{m.group(1)} percent", text)
    text = _NUMBER_SIGN.sub(lambda m: f"number {m.group(1)}", text)
    text = _ORDINAL.sub(lambda m: ordinal_words(int(m.group(1))), text)
    text = _YEAR.sub(lambda m: year_words(int(m.group(1))), text)
    text = _DECIMAL.sub(lambda m: f"{number_words(int(m.group(1)))} point {digits_words(m.group(2))}", text)
    text = _INTEGER.sub(lambda m: number_words(int(m.group(1).replace(",", ""))), text)
    text = text.replace("&", " and ").replace("+", " plus ").replace("@", " at ")
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)
