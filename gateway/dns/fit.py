"""Size rules for answers: Consul 1.8's trimDNSResponse (trimUDPResponse / trimTCPResponse)
and a_record_limit, then the wire encoding.

What Consul does, and so what this does:
- `a_record_limit` (when > 0) keeps only the first N A/AAAA answers, on any transport.
- Only service lookups are trimmed (`Answer.trim`); node, addr, PTR, SOA and NS answers go out
  whole, as in Consul.
- UDP: the limit is 512 bytes, or the client's EDNS buffer size when larger. At 512 a first cut
  keeps min(8, udp_answer_limit) answers, after which sizes are measured without name
  compression (the conservative reading Consul uses). Then, while more than one answer is left
  and the message is too large, answers are dropped from the end.
- TCP: at most 4096 answers (1024 for SRV), then the same size loop against 65523 bytes.
- Whenever answers are dropped the additional section is rebuilt as Consul's syncExtra does:
  for each SRV answer the first additional record owned by its target (following CNAMEs). So a
  trimmed SRV answer keeps one address per target and loses the node meta TXT records, and a
  trimmed A answer has no additional records at all.
- TC is set when answers were dropped by the trimming and `enable_truncate` is on.

`disable_compression` is not honoured: names are always compressed except SRV targets (RFC
2782), which every client reads, and the size rules above do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.config.model import DNSConfig
from gateway.dns import wire
from gateway.dns.authority import Answer

MAX_UDP_ANSWERS = 8  # Consul's maxUDPAnswerLimit: udp_answer_limit cannot raise it
MAX_UDP_DATAGRAM = wire.MAX_UDP - 68  # room for the IP and UDP headers
MAX_TCP_SIZE = 65523  # Consul: 64k less some overhead
MAX_TCP_ANSWERS, MAX_TCP_SRV_ANSWERS = 4096, 1024

Records = list[wire.Record]


def encode_answer(question: wire.Question, answer: Answer, dns_config: DNSConfig, *,
                  udp: bool, recursion_available: bool) -> bytes:
    """The response bytes for `answer` (ID 0; the server patches it per query)."""
    answers = _cap_address_records(list(answer.answers), dns_config.a_record_limit)
    additional = list(answer.additional)
    trimmed = False
    if answer.trim:
        if udp:
            answers, additional, trimmed = trim_udp(question, answers, answer.authority,
                                                    additional, dns_config.udp_answer_limit)
        else:
            answers, additional, trimmed = trim_tcp(question, answers, answer.authority,
                                                    additional)
    packet = wire.encode_response(
        question, answer.rcode, answers, answer.authority, additional,
        recursion_available=recursion_available,
        truncated=trimmed and dns_config.enable_truncate)
    if len(packet) > (MAX_UDP_DATAGRAM if udp else wire.MAX_UDP):
        # Cannot be sent at all (huge node meta, say): an empty truncated answer makes the
        # client retry over TCP, or at least fail cleanly.
        packet = wire.encode_response(question, answer.rcode,
                                      recursion_available=recursion_available, truncated=True)
    return packet


def _cap_address_records(answers: Records, limit: int) -> Records:
    if limit <= 0:
        return answers
    kept: Records = []
    count = 0
    for record in answers:
        if record.rtype in (wire.A, wire.AAAA):
            if count >= limit:
                continue
            count += 1
        kept.append(record)
    return kept


def trim_udp(question: wire.Question, answers: Records, authority: Sequence[wire.Record],
             additional: Records, udp_answer_limit: int) -> tuple[Records, Records, bool]:
    """Consul's trimUDPResponse; returns (answers, additional, whether answers were dropped)."""
    count = len(answers)
    max_size = wire.MIN_UDP
    if question.edns and question.udp_size > max_size:
        max_size = min(question.udp_size, MAX_UDP_DATAGRAM)
    max_answers = min(MAX_UDP_ANSWERS, udp_answer_limit)
    if (count <= max_answers or max_size > wire.MIN_UDP) and \
            _uncompressed_size(question, answers, authority, additional) <= max_size:
        return answers, additional, False  # the common case: it all fits, nothing to cut
    index = _index(additional) if additional else None
    compressed = True
    if max_size == wire.MIN_UDP and count > max_answers:
        compressed = False
        answers = answers[:max(max_answers, 0)]
        if index is not None:
            additional = _sync_extra(index, answers)
    answers, additional = _shrink(question, answers, authority, additional, index, max_size,
                                  compressed)
    return answers, additional, len(answers) < count


def trim_tcp(question: wire.Question, answers: Records, authority: Sequence[wire.Record],
             additional: Records) -> tuple[Records, Records, bool]:
    """Consul's trimTCPResponse. Its count cap alone does not count as trimming (as Consul)."""
    cap = MAX_TCP_SRV_ANSWERS if question.qtype == wire.SRV else MAX_TCP_ANSWERS
    answers = answers[:cap]
    before = len(answers)
    index = _index(additional) if additional else None
    answers, additional = _shrink(question, answers, authority, additional, index,
                                  MAX_TCP_SIZE, True)
    return answers, additional, len(answers) < before


def _shrink(question: wire.Question, answers: Records, authority: Sequence[wire.Record],
            additional: Records, index: dict[str, wire.Record] | None, max_size: int,
            compressed: bool) -> tuple[Records, Records]:
    """Consul's size loop: while more than one answer is left and the message is too large,
    cut the answers (by binary search when more than 100 bytes over, else one at a time) and
    rebuild the additional section. The binary search measures every candidate with rebuilt
    additional records, so it may keep all answers and only shed the node meta TXT records
    (then nothing counts as trimmed), exactly as Consul does."""
    if compressed:
        def measure(question, answers, authority, additional):
            # The uncompressed size is cheap arithmetic and an upper bound: when it fits,
            # there is no need to encode just to measure.
            bound = _uncompressed_size(question, answers, authority, additional)
            if bound <= max_size:
                return bound
            return _encoded_size(question, answers, authority, additional)
    else:
        measure = _uncompressed_size

    def extra_for(kept: Records) -> Records:
        return _sync_extra(index, kept) if index is not None else additional

    while len(answers) > 1:
        over = measure(question, answers, authority, additional) - max_size
        if over <= 0:
            break
        if over > 100:
            answers = answers[:_binary_truncate(question, answers, authority, extra_for,
                                                measure, max_size)]
        else:
            answers = answers[:-1]
        additional = extra_for(answers)
    return answers, additional


def _binary_truncate(question, answers, authority, extra_for, measure, max_size) -> int:
    """Consul's dnsBinaryTruncate: a count of answers that fits, stopping early when within
    10 bytes of the limit. Unlike Consul it never returns 0: a single oversized record is
    still sent (Consul's own comment says it means to)."""
    start, end = 0, len(answers) + 1
    while end - start > 1:
        middle = start + (end - start) // 2
        kept = answers[:middle]
        size = measure(question, kept, authority, extra_for(kept))
        if size <= max_size:
            if max_size - size < 10:
                return middle
            start = middle
        else:
            end = middle
    return max(start, 1)


def _index(records: Records) -> dict[str, wire.Record]:
    """The first record of each owner name, lower-cased (Consul's indexRRs)."""
    index: dict[str, wire.Record] = {}
    for record in records:
        index.setdefault(record.name.lower(), record)
    return index


def _sync_extra(index: dict[str, wire.Record], answers: Records) -> Records:
    """The additional records the SRV answers still need (Consul's syncExtra)."""
    extra: Records = []
    resolved: set[str] = set()
    for record in answers:
        if record.rtype != wire.SRV:
            continue
        target = record.data.target.lower()
        while target not in resolved:
            resolved.add(target)
            found = index.get(target)
            if found is None:
                break
            extra.append(found)
            if found.rtype != wire.CNAME:
                break
            target = found.data.lower()
    return extra


def _encoded_size(question: wire.Question, answers: Records, authority: Sequence[wire.Record],
                  additional: Records) -> int:
    return len(wire.encode_response(question, 0, answers, authority, additional))


def _name_size(name: str) -> int:
    return len(name.rstrip(".").encode("ascii")) + 2 if name.strip(".") else 1


def _rdata_size(record: wire.Record) -> int:
    data = record.data
    if record.rtype in (wire.A, wire.AAAA):
        return len(data)
    if record.rtype == wire.TXT:
        return sum(1 + min(255, len(s.encode("utf-8"))) for s in data)
    if record.rtype == wire.SRV:
        return 6 + _name_size(data.target)
    if record.rtype == wire.SOA:
        return _name_size(data.mname) + _name_size(data.rname) + 20
    return _name_size(data)  # PTR, NS, CNAME


def _uncompressed_size(question: wire.Question, answers: Records,
                       authority: Sequence[wire.Record], additional: Records) -> int:
    """The message size with no name compression (Consul measures this way at 512 bytes)."""
    size = 12 + _name_size(question.name) + 4 + (11 if question.edns else 0)
    for records in (answers, authority, additional):
        size += sum(_name_size(r.name) + 10 + _rdata_size(r) for r in records)
    return size
