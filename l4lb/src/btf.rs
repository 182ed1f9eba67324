//! Just enough of ELF and BTF to read struct layouts out of a compiled BPF object, for the
//! layout check (`layout::verify_objects`). Little-endian ELF64 only, as clang's `-target bpf`
//! writes on this machine's architecture.

/// Why an object's BTF could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("not a little-endian ELF64 object")]
    NotElf64,
    #[error("truncated at byte {at}")]
    Truncated { at: usize },
    #[error("section {name} out of bounds")]
    SectionBounds { name: String },
    #[error("no {name} section (compiled without -g?)")]
    NoSection { name: String },
    #[error("bad BTF magic {magic:#x}")]
    BadMagic { magic: u16 },
    #[error("unknown BTF kind {kind}")]
    UnknownKind { kind: u32 },
}

pub struct Member {
    pub name: String,
    pub bit_offset: u32,
}

pub struct Struct {
    pub size: u32,
    pub members: Vec<Member>,
}

pub struct Btf {
    structs: Vec<(String, Struct)>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Truncated { at })
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Truncated { at })
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, BtfError> {
    Ok(u32_at(b, at)? as u64 | (u32_at(b, at + 4)? as u64) << 32)
}

fn c_str(b: &[u8], at: usize) -> String {
    let s = b.get(at..).unwrap_or_default();
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// The bytes of a named ELF section.
fn elf_section<'a>(elf: &'a [u8], want: &str) -> Result<&'a [u8], BtfError> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(BtfError::NotElf64);
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    let header = |i: usize| shoff + i * shentsize;
    let names_off = u64_at(elf, header(shstrndx) + 24)? as usize;
    for i in 0..shnum {
        let h = header(i);
        let name = c_str(elf, names_off + u32_at(elf, h)? as usize);
        if name == want {
            let off = u64_at(elf, h + 24)? as usize;
            let size = u64_at(elf, h + 32)? as usize;
            return elf
                .get(off..off + size)
                .ok_or_else(|| BtfError::SectionBounds { name: want.into() });
        }
    }
    Err(BtfError::NoSection { name: want.into() })
}

impl Btf {
    pub fn from_elf(elf: &[u8]) -> Result<Btf, BtfError> {
        Self::parse(elf_section(elf, ".BTF")?)
    }

    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        let magic = u16_at(b, 0)?;
        if magic != 0xeb9f {
            return Err(BtfError::BadMagic { magic });
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = hdr_len + u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = hdr_len + u32_at(b, 16)? as usize;
        let name = |off: u32| c_str(b, str_off + off as usize);
        let mut structs = Vec::new();
        let mut at = type_off;
        while at < type_off + type_len {
            let name_off = u32_at(b, at)?;
            let info = u32_at(b, at + 4)?;
            let size = u32_at(b, at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,
                kind => return Err(BtfError::UnknownKind { kind }),
            };
            if kind == 4 {
                let mut members = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let m = at + i * 12;
                    let off = u32_at(b, m + 8)?;
                    members.push(Member {
                        name: name(u32_at(b, m)?),
                        bit_offset: if kflag { off & 0x00ff_ffff } else { off },
                    });
                }
                structs.push((name(name_off), Struct { size, members }));
            }
            at += extra;
        }
        Ok(Btf { structs })
    }

    pub fn struct_by_name(&self, name: &str) -> Option<&Struct> {
        self.structs.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage() {
        assert!(Btf::from_elf(b"not an elf").is_err());
        assert!(Btf::parse(&[0u8; 24]).is_err());
        let obj = lodestar_ebpf::sock_lb();
        // Any truncation is an error, never a panic.
        for cut in [10, 64, 100, obj.len() / 2] {
            let _ = Btf::from_elf(&obj[..cut]);
        }
    }
}
