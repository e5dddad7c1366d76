//! Reading Diameter messages out of a capture, and writing a capture of messages, with
//! the pcap-file and etherparse crates.

use std::collections::BTreeMap;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// Every TCP payload of the capture on `port`, concatenated per direction of each
/// connection (in capture order), then cut into Diameter messages.
pub fn diameter_messages(pcap: &[u8], port: u16) -> Vec<Vec<u8>> {
    let frames = ethernet_frames(pcap);
    // (src port, dst port) -> reassembled bytes, in first-seen order.
    let mut order: Vec<(u16, u16)> = Vec::new();
    let mut streams: BTreeMap<(u16, u16), Vec<u8>> = BTreeMap::new();
    let mut out = Vec::new();
    for frame in &frames {
        let Ok(sliced) = SlicedPacket::from_ethernet(frame) else {
            continue;
        };
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            continue;
        };
        if tcp.source_port() != port && tcp.destination_port() != port {
            continue;
        }
        let payload = tcp.payload();
        if payload.is_empty() {
            continue;
        }
        let key = (tcp.source_port(), tcp.destination_port());
        if !streams.contains_key(&key) {
            order.push(key);
        }
        let s = streams.entry(key).or_default();
        s.extend_from_slice(payload);
        // Cut whole messages as they complete, so the output follows capture order.
        loop {
            if s.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes([0, s[1], s[2], s[3]]) as usize;
            if len < 20 || s.len() < len {
                break;
            }
            out.push(s.drain(..len).collect());
        }
    }
    for k in order {
        assert!(streams[&k].is_empty(), "left-over bytes in stream {k:?}");
    }
    out
}

/// The link-layer frames of a pcap or pcapng capture (Ethernet).
pub fn ethernet_frames(capture: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if capture.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut reader = PcapNgReader::new(capture).expect("pcapng header");
        while let Some(block) = reader.next_block() {
            match block.expect("pcapng block") {
                Block::EnhancedPacket(p) => out.push(p.data.to_vec()),
                Block::SimplePacket(p) => out.push(p.data.to_vec()),
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(capture).expect("pcap header");
        while let Some(pkt) = reader.next_packet() {
            out.push(pkt.expect("pcap packet").data.to_vec());
        }
    }
    out
}

/// Writes `messages` as one TCP connection on loopback, alternating no direction
/// (all from client port 40000 to `port`, answers the other way when `answers[i]`).
pub fn write_capture(messages: &[(bool, Vec<u8>)], port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(&mut out, header).expect("pcap writer");
    let (mut seq_c, mut seq_s) = (1000u32, 5000u32);
    for (i, (from_server, msg)) in messages.iter().enumerate() {
        let (sp, dp, seq, ack) = if *from_server {
            (port, 40000, seq_s, seq_c)
        } else {
            (40000, port, seq_c, seq_s)
        };
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(sp, dp, seq, 65535)
            .ack(ack)
            .psh();
        let mut frame = Vec::with_capacity(builder.size(msg.len()));
        builder.write(&mut frame, msg).expect("packet");
        if *from_server {
            seq_s = seq_s.wrapping_add(msg.len() as u32);
        } else {
            seq_c = seq_c.wrapping_add(msg.len() as u32);
        }
        let ts = std::time::Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
            .expect("write");
    }
    w.into_writer();
    out
}
