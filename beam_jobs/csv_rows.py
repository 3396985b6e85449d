"""Read `train.csv` with line numbers and check each data row.

The file is UTF-8, optionally with a byte order mark, with LF, CRLF or CR line endings.
Header: `Id`, `Genre` (a Python-style list such as `['Comedy', 'Drama']`), then one 0/1
column per label; the label names and their order come from the header. The one-hot
columns are the training labels. The `Genre` string is only compared with them, and a
disagreement is recorded as a note, never used to change a label.
"""

import ast
import csv
import io
import re
from typing import Iterator, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from beam_jobs import records

ID_COLUMN = "Id"
GENRE_COLUMN = "Genre"
NUM_LEADING_COLUMNS = 2

# An id becomes the file name `<id>.jpg`, so it may contain only characters that are safe
# in a file name on every file system Beam writes to, and no path separator or `..`.
SAFE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class InputError(ValueError):
    """Raised when the CSV cannot be used at all: missing, empty, bad header, unreadable."""


def open_csv_text(csv_path: str) -> io.TextIOWrapper:
    """Open `csv_path` (local, `gs://`, `s3://`) as text for the `csv` module.

    `utf-8-sig` drops a leading byte order mark. Bytes that are not UTF-8 become U+FFFD,
    so that one bad row is rejected by `check_row` instead of failing the whole file.
    """
    try:
        binary = FileSystems.open(csv_path)
    except (FileNotFoundError, OSError) as error:
        raise InputError(
            f"Cannot open the CSV {csv_path}: {error}. Check --dataset_dir or --csv_path."
        ) from error
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")


def read_header(csv_path: str) -> List[str]:
    """Read and check the CSV header, and that at least one data row follows it.

    Returns:
        The label names (the header after `Id` and `Genre`), in column order.

    Raises:
        InputError: when the file is missing or empty, the header is not
            `Id,Genre,<label>...`, a label name is empty or repeated, or no data row follows.
    """
    with open_csv_text(csv_path) as text:
        reader = csv.reader(text)
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
        if header is None:
            raise InputError(
                f"The CSV {csv_path} is empty. Expected a header `Id,Genre,<label>,...` "
                "and one row per poster."
            )
        header = [name.strip() for name in header]
        if header[:NUM_LEADING_COLUMNS] != [ID_COLUMN, GENRE_COLUMN]:
            raise InputError(
                f"The CSV {csv_path} has the header {header[:3]}..., but the first two columns "
                f"must be {ID_COLUMN!r} and {GENRE_COLUMN!r}, followed by one 0/1 column per label."
            )
        labels = header[NUM_LEADING_COLUMNS:]
        if not labels:
            raise InputError(f"The CSV {csv_path} has no label columns after Id and Genre.")
        if "" in labels:
            raise InputError(f"The CSV {csv_path} has an empty label name in its header.")
        repeated = sorted({name for name in labels if labels.count(name) > 1})
        if repeated:
            raise InputError(f"The CSV {csv_path} repeats the label columns {repeated}.")

        first_row = next(reader, None)
        while first_row == []:
            first_row = next(reader, None)
        if first_row is None:
            raise InputError(f"The CSV {csv_path} has a header but no data rows.")
    return labels


def iter_csv_rows(csv_path: str) -> Iterator[Optional[records.CsvRow]]:
    """Yield each data row after the header with the line number where it starts.

    Yields None for each blank line, so that callers can count them: blank lines are not
    data rows. Line numbers are 1-based and count the header, so the first data row of a
    file without blank lines is line 2.

    Raises:
        InputError: when the `csv` module cannot split the file, for example because an
            unterminated quote swallows the rest of the file into one huge field.
    """
    with open_csv_text(csv_path) as text:
        reader = csv.reader(text)
        header_seen = False
        previous_end = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise InputError(
                    f"{csv_path}: cannot parse the CSV after line {previous_end} ({error}). "
                    "Look for an unterminated quote there and fix the file."
                ) from error

            # `line_num` is the physical line where the row ends; a quoted field may span lines.
            start = previous_end + 1
            previous_end = reader.line_num
            if not fields:
                if header_seen:
                    yield None
                continue
            if not header_seen:
                header_seen = True
                continue
            yield records.CsvRow(line_number=start, fields=tuple(fields))


def check_row(
    row: records.CsvRow, labels: Sequence[str]
) -> Tuple[Optional[records.PosterRow], Optional[records.Rejection], List[records.Note]]:
    """Check one CSV row and build its `PosterRow`.

    Returns:
        `(poster_row, None, notes)` for a valid row, or `(None, rejection, [])`.
    """
    fields = row.fields
    expected_fields = NUM_LEADING_COLUMNS + len(labels)
    poster_id = fields[0].strip() if fields else ""

    def reject(reason: str, detail: str):
        return (
            None,
            records.Rejection(row.line_number, fields[0] if fields else "", reason, detail),
            [],
        )

    if len(fields) != expected_fields:
        detail = f"{len(fields)} fields, expected {expected_fields} (Id, Genre and one per label)"
        if any("\n" in field or "\r" in field for field in fields):
            detail += "; a quoted field spans several lines, so look for an unterminated quote"
        return reject(records.WRONG_FIELD_COUNT, detail)
    if any("\ufffd" in field for field in fields):
        return reject(records.INVALID_ENCODING, "the row contains bytes that are not UTF-8")

    raw_id = fields[0]
    if not raw_id.strip():
        return reject(records.MISSING_ID, "the Id cell is empty")
    if raw_id != poster_id or not SAFE_ID_PATTERN.fullmatch(raw_id) or ".." in raw_id:
        return reject(
            records.UNSAFE_ID,
            f"id {raw_id!r} is not a safe file name: use letters, digits, '.', '_' and '-' "
            "only, no '..', no path separator or surrounding space, at most 200 characters",
        )

    multi_hot = []
    for name, cell in zip(labels, fields[NUM_LEADING_COLUMNS:]):
        value = cell.strip()
        if value not in ("0", "1"):
            cell_text = "empty" if not value else repr(cell)
            return reject(
                records.INVALID_LABEL_VALUE, f"column {name!r} is {cell_text}, expected 0 or 1"
            )
        multi_hot.append(int(value))
    if not any(multi_hot):
        return reject(records.NO_GENRE, "every label column is 0")

    poster_row = records.PosterRow(row.line_number, poster_id, tuple(multi_hot))
    notes = compare_genre_string(poster_row, fields[1], labels)
    return poster_row, None, notes


def compare_genre_string(
    poster_row: records.PosterRow, genre_string: str, labels: Sequence[str]
) -> List[records.Note]:
    """Return a note when the `Genre` string disagrees with the one-hot columns, else []."""
    one_hot_names = {name for name, value in zip(labels, poster_row.multi_hot) if value}
    try:
        parsed = ast.literal_eval(genre_string.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(g, str) for g in parsed):
        return [
            records.Note(
                poster_row.line_number,
                poster_row.poster_id,
                records.GENRE_STRING_UNPARSABLE,
                f"Genre {genre_string!r} is not a list of strings; labels taken from the "
                f"one-hot columns {sorted(one_hot_names)}",
            )
        ]

    string_names = {name.strip() for name in parsed}
    if string_names == one_hot_names:
        return []
    return [
        records.Note(
            poster_row.line_number,
            poster_row.poster_id,
            records.GENRE_STRING_MISMATCH,
            f"Genre lists {sorted(string_names)} but the one-hot columns are "
            f"{sorted(one_hot_names)}; the one-hot columns were used",
        )
    ]
