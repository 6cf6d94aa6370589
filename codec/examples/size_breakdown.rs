//! Where the bytes of a packed file go: per field, the coded symbols against their
//! entropy, and the overheads of frequency tables, block table ids, chunk lengths and
//! rANS states; and what the container adds (index, stream alignment, preamble and
//! trailer). `cargo run --release -p mcodec --example size_breakdown -- FILE...`.
//! `SIZE_BLOCK_LOG2`, `SIZE_CHUNK_LOG2` and `SIZE_EFFORT=max` override the encoder
//! settings, to compare them.

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::format::{StreamLayout, STATE_BYTES};
use mcodec::Codec;

#[derive(Default, Debug)]
struct Field {
    streams: usize,
    total: u64,
    tables: u64,
    n_tables: u64,
    table_symbols: u64,
    block_ids: u64,
    chunk_lens: u64,
    states: u64,
    packed: u64,
    constant: u64,
    rans_payload: u64,
    /// Bits of the coded symbols under the stream's quantised tables.
    table_cost_bits: f64,
    /// Bits under unquantised tables fitted to the same block clusters.
    cluster_entropy_bits: f64,
    /// Bits under one unquantised table per tensor (order-0 entropy).
    tensor_entropy_bits: f64,
    /// Bits of the run-coded ids (format 1.3, mode 4).
    run_ids_bits: u64,
}

fn entropy_bits(h: &[u64]) -> f64 {
    let n: u64 = h.iter().sum();
    h.iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 * (n as f64 / c as f64).log2())
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let input = std::fs::read(&path)?;
        let mut packed = Vec::new();
        let mut opts = PackOptions::default();
        if std::env::var("SIZE_EFFORT").as_deref() == Ok("max") {
            opts.encode = mcodec::EncodeOptions::max();
        }
        if let Ok(v) = std::env::var("SIZE_BLOCK_LOG2") {
            opts.encode.block_log2 = v.parse()?;
        }
        if let Ok(v) = std::env::var("SIZE_CHUNK_LOG2") {
            opts.encode.chunk_log2 = v.parse()?;
        }
        pack(&input, &opts, &mut packed, &|_| {})?;
        let archive = Archive::open(&packed)?;
        let mut fields: Vec<Field> = (0..4).map(|_| Field::default()).collect();
        let mut other = 0u64;
        let mut by_codec = std::collections::BTreeMap::<&str, (usize, u64, u64)>::new();
        let mut stream_bytes = 0u64;
        let mut padding = 0u64;
        let mut n_streams = 0u64;
        // Format 1.2 estimates: compact tables (bytes saved), stream lengths in file order.
        let mut compact_saved = 0u64;
        let mut lens_in_order: Vec<u64> = vec![archive.index().prefix.stream.len];
        for t in &archive.index().tensors {
            for s in &t.streams {
                stream_bytes += s.len;
                padding += s.len.next_multiple_of(64) - s.len;
                lens_in_order.push(s.len);
                n_streams += 1;
            }
            let e = by_codec.entry(t.codec.name()).or_default();
            e.0 += 1;
            e.1 += t.original_len;
            e.2 += t.coded_len();
            let Codec::Split(layout) = t.codec else {
                other += t.coded_len();
                continue;
            };
            let n = (t.original_len as usize) / layout.element_size();
            for (f, (s, &bits)) in t.streams.iter().zip(layout.field_bits()).enumerate() {
                let bytes = archive.stream_unverified(s);
                let acc = &mut fields[f];
                acc.streams += 1;
                acc.total += bytes.len() as u64;
                match StreamLayout::parse(bytes, bits, n, 1 << t.chunk_log2)? {
                    StreamLayout::Packed => acc.packed += bytes.len() as u64,
                    StreamLayout::Const(_) => acc.constant += bytes.len() as u64,
                    StreamLayout::Rans {
                        tables,
                        block_log2,
                        payloads,
                        block_ids,
                    } => {
                        let data = &input[t.original_offset as usize..][..t.original_len as usize];
                        let mut cols = vec![vec![0u16; n]; layout.field_bits().len()];
                        {
                            let mut refs: Vec<&mut [u16]> =
                                cols.iter_mut().map(|c| c.as_mut_slice()).collect();
                            layout.split(data, &mut refs);
                        }
                        let ids = &block_ids[..];
                        let alphabet = 1usize << bits;
                        let mut clusters = vec![vec![0u64; alphabet]; tables.len()];
                        let mut whole = vec![0u64; alphabet];
                        for (block, &id) in cols[f].chunks(1 << block_log2).zip(ids) {
                            let mut h = vec![0u32; alphabet];
                            for &s in block {
                                h[usize::from(s)] += 1;
                                clusters[usize::from(id)][usize::from(s)] += 1;
                                whole[usize::from(s)] += 1;
                            }
                            acc.table_cost_bits +=
                                tables[usize::from(id)].cost_bits(&h).expect("coded symbol");
                        }
                        acc.cluster_entropy_bits +=
                            clusters.iter().map(|h| entropy_bits(h)).sum::<f64>();
                        acc.tensor_entropy_bits += entropy_bits(&whole);
                        acc.tables += tables
                            .iter()
                            .map(|t| t.serialized_len() as u64)
                            .sum::<u64>();
                        acc.n_tables += tables.len() as u64;
                        compact_saved += tables
                            .iter()
                            .map(|t| t.serialized_len() as u64)
                            .sum::<u64>()
                            - mcodec::format::compact_tables_len(&tables) as u64;
                        acc.table_symbols +=
                            tables.iter().map(|t| t.symbols().len() as u64).sum::<u64>();
                        acc.block_ids += n.div_ceil(1 << block_log2) as u64;
                        acc.run_ids_bits += mcodec::format::ids_bits(ids, tables.len());
                        acc.chunk_lens += 4 * payloads.len() as u64;
                        acc.states += (STATE_BYTES * payloads.len()) as u64;
                        acc.rans_payload += payloads
                            .iter()
                            .map(|p| (p.1 - STATE_BYTES) as u64)
                            .sum::<u64>();
                    }
                }
            }
        }
        println!(
            "{path}: {} -> {} bytes ({:.4} %), non-split tensors {other} bytes",
            input.len(),
            packed.len(),
            100.0 * packed.len() as f64 / input.len() as f64
        );
        let prefix = archive.index().prefix.stream.len;
        padding += prefix.next_multiple_of(64) - prefix;
        let index_bytes = packed.len() as u64 - 128 - stream_bytes - padding - prefix;
        println!(
            "  container: preamble+trailer 128, header (prefix) stream {prefix}, tensor streams \
             {stream_bytes} in {n_streams}, alignment padding {padding} (incl. the header's), \
             index and the padding before it {index_bytes}"
        );
        // The index as one zstd frame, and the stream padding under smaller alignments.
        let trailer = &packed[packed.len() - 64..];
        let word = |at: usize| u64::from_le_bytes(trailer[at..at + 8].try_into().unwrap());
        let index = &packed[word(0) as usize..][..word(8) as usize];
        let zindex: Vec<String> = [3, 19]
            .iter()
            .map(|&l| format!("{}", zstd::bulk::compress(index, l).map_or(0, |z| z.len())))
            .collect();
        let pads: Vec<String> = [1u64, 4, 8, 16]
            .iter()
            .map(|&a| {
                let p: u64 = lens_in_order
                    .iter()
                    .map(|&l| l.next_multiple_of(a) - l)
                    .sum();
                format!("align {a}: {p}")
            })
            .collect();
        println!(
            "  1.2 estimates: compact tables save {compact_saved}; index {} -> zstd {} \
             (levels 3, 19); stream padding {padding} -> {}",
            index.len(),
            zindex.join(" / "),
            pads.join(", ")
        );
        for (codec, (count, orig, coded)) in &by_codec {
            println!("  codec {codec}: {count} tensors, {orig} -> {coded} bytes");
        }
        for (f, a) in fields.iter().enumerate().filter(|(_, a)| a.streams > 0) {
            println!("  field {f}: {a:?}");
            if a.table_cost_bits > 0.0 {
                println!(
                    "    rANS field {f}: payload {} = {:.0} under its tables ({:.0} over the \
                     block clusters' entropy: quantisation); tables {} ({} for {} symbols), \
                     states {}, ids {} (run-coded {}), lengths {}",
                    a.rans_payload,
                    a.table_cost_bits / 8.0,
                    (a.table_cost_bits - a.cluster_entropy_bits) / 8.0,
                    a.tables,
                    a.n_tables,
                    a.table_symbols,
                    a.states,
                    a.block_ids,
                    a.run_ids_bits.div_ceil(8),
                    a.chunk_lens
                );
            }
        }
    }
    Ok(())
}
