//! cgroup v2 has no devices controller: access to device nodes is decided by
//! an eBPF program of type CGROUP_DEVICE attached to the container's cgroup.
//! This builds that program (an allow list: the standard devices, as on v1)
//! and attaches it. Hand-assembled, like runc's devicefilter: a dozen
//! instructions per rule do not justify an eBPF toolchain (aya, libbpf).

use super::limits::STANDARD_DEVICES;
pub use crate::sys::BpfInsn as Insn;
use std::os::fd::AsFd;
use std::path::Path;

const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// (type, major, minor, access bits) of a rule like `c 1:3 rwm`; minor None
/// is `*`. Types: 1 block, 2 char; access: 1 mknod, 2 read, 4 write.
fn parse(rule: &str) -> Option<(i32, i32, Option<i32>, i32)> {
    let mut it = rule.split_whitespace();
    let kind = match it.next()? {
        "b" => 1,
        "c" => 2,
        _ => return None,
    };
    let (maj, min) = it.next()?.split_once(':')?;
    let access = it.next()?.chars().fold(0, |a, c| {
        a | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    });
    Some((
        kind,
        maj.parse().ok()?,
        if min == "*" {
            None
        } else {
            Some(min.parse().ok()?)
        },
        access,
    ))
}

/// The program: r2 = type, r3 = access, r4 = major, r5 = minor; each rule
/// either returns 1 (allow) or jumps to the next; 0 at the end (deny).
pub fn program(rules: &[&str]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0), // r2 = ctx->access_type
        insn(LDX_MEM_W, 3, 1, 0, 0), // r3 = ctx->access_type
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0), // r4 = ctx->major
        insn(LDX_MEM_W, 5, 1, 8, 0), // r5 = ctx->minor
    ];
    for r in rules.iter().filter_map(|r| parse(r)) {
        let (kind, major, minor, access) = r;
        let mut block = vec![insn(JNE_K, 2, 0, 0, kind), insn(JNE_K, 4, 0, 0, major)];
        if let Some(m) = minor {
            block.push(insn(JNE_K, 5, 0, 0, m));
        }
        // any access bit outside the allowed ones: not this rule
        block.push(insn(JSET_K, 3, 0, 0, !access & 0x7));
        block.push(insn(MOV64_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // every jump lands right after this block
        let n = block.len() as i16;
        for (i, b) in block.iter_mut().enumerate() {
            if b.code == JNE_K || b.code == JSET_K {
                b.off = n - 1 - i as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Attaches the standard-devices filter to the v2 cgroup at `dir`.
pub fn attach_standard(dir: &Path) -> std::io::Result<()> {
    let prog = program(&STANDARD_DEVICES);
    let fd = crate::sys::bpf_load_device_filter(&prog)?;
    let cg = std::fs::File::open(dir)?;
    crate::sys::bpf_attach_device_filter(cg.as_fd(), fd.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program the way the kernel would, for a request.
    fn eval(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let _ = src;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                JSET_K => {
                    if r[dst] & (i.imm as i64 as u64) != 0 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("unknown op {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn allows_the_standard_devices_only() {
        let p = program(&STANDARD_DEVICES);
        let (chr, blk) = (2, 1);
        let (m, rd, wr) = (1, 2, 4);
        assert_eq!(eval(&p, chr, rd | wr, 1, 3), 1, "/dev/null");
        assert_eq!(eval(&p, chr, m, 1, 9), 1, "mknod urandom");
        assert_eq!(eval(&p, chr, rd, 136, 7), 1, "a pty");
        assert_eq!(eval(&p, chr, rd, 1, 1), 0, "/dev/mem");
        assert_eq!(eval(&p, chr, m | rd, 10, 200), 0, "/dev/net/tun");
        assert_eq!(eval(&p, blk, rd, 8, 0), 0, "a disk");
        assert_eq!(eval(&p, blk, rd, 1, 3), 0, "block 1:3 is not char 1:3");
        let ro = program(&["c 1:3 r"]);
        assert_eq!(eval(&ro, chr, rd, 1, 3), 1);
        assert_eq!(eval(&ro, chr, wr, 1, 3), 0, "write is not granted by r");
        assert_eq!(eval(&ro, chr, rd | wr, 1, 3), 0);
    }
}
