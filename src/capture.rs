//! Reading and writing captures (pcap and pcapng) for replay.
