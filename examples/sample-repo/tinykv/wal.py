"""The write-ahead log: length-prefixed records with a CRC32 checksum each."""

import os
import struct
import zlib

HEADER = struct.Struct(">IIB")  # checksum, payload length, operation
OP_PUT = 1
OP_DELETE = 2


class CorruptRecord(Exception):
    """A record whose checksum does not match its payload."""


def encode_record(op, key, value=b""):
    """Encode one log record: header, then key length, key and value."""
    key_bytes = key.encode("utf-8")
    payload = struct.pack(">H", len(key_bytes)) + key_bytes + value
    checksum = zlib.crc32(payload) & 0xFFFFFFFF
    return HEADER.pack(checksum, len(payload), op) + payload


def decode_records(data):
    """Yield (op, key, value) for each intact record; stop at the first torn or corrupt one."""
    offset = 0
    while offset + HEADER.size <= len(data):
        checksum, length, op = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) & 0xFFFFFFFF != checksum:
            return
        (key_length,) = struct.unpack_from(">H", payload, 0)
        key = payload[2 : 2 + key_length].decode("utf-8")
        yield op, key, payload[2 + key_length :]
        offset = start + length


class WriteAheadLog:
    """Append-only log file; every append is fsynced before it returns."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "ab")

    def append(self, op, key, value=b""):
        """Append a record and make it durable."""
        self._file.write(encode_record(op, key, value))
        self._file.flush()
        os.fsync(self._file.fileno())

    def size(self):
        """Return the log's size in bytes."""
        return self._file.tell()

    def replay(self):
        """Return the records of the log from the beginning."""
        with open(self.path, "rb") as handle:
            return list(decode_records(handle.read()))

    def close(self):
        self._file.close()
