#include "dataplane/uring/cpu_steering.h"

#include <linux/bpf.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kpx::uring {
namespace {

bpf_insn Insn(uint8_t code, uint8_t dst, int16_t off, int32_t imm) {
  bpf_insn x{};
  x.code = code;
  x.dst_reg = dst;
  x.off = off;
  x.imm = imm;
  return x;
}

// r0 = bpf_get_smp_processor_id(); return the index of r0 in cpus, else -1
// (past the end of any group: the kernel's hash decides).
int LoadProgram(const std::vector<int>& cpus, std::string* why) {
  std::vector<bpf_insn> p;
  p.push_back(Insn(BPF_JMP | BPF_CALL, 0, 0, BPF_FUNC_get_smp_processor_id));
  for (size_t i = 0; i < cpus.size(); ++i) {
    p.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 2, cpus[i]));
    p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, static_cast<int32_t>(i)));
    p.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0));
  }
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, -1));
  p.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0));
  static const char kLicense[] = "Dual BSD/GPL";
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = reinterpret_cast<uint64_t>(p.data());
  attr.insn_cnt = static_cast<uint32_t>(p.size());
  attr.license = reinterpret_cast<uint64_t>(kLicense);
  std::strncpy(attr.prog_name, "kpx_steer_cpu", sizeof(attr.prog_name) - 1);
  const int fd = static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr)));
  if (fd < 0) *why = absl::StrCat("loading the eBPF steering program: ", std::strerror(errno));
  return fd;
}

}  // namespace

CpuSteering::CpuSteering(std::vector<int> cpus, bool allow_ebpf) : cpus_(std::move(cpus)) {
  if (cpus_.empty()) return;
  if (!allow_ebpf) {
    fallback_reason_ = "eBPF steering not allowed";
    return;
  }
  prog_.reset(LoadProgram(cpus_, &fallback_reason_));
}

absl::Status CpuSteering::Attach(int fd) const {
  if (prog_.valid()) {
    const int prog = prog_.get();
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog)) == 0) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("SO_ATTACH_REUSEPORT_EBPF: ", std::strerror(errno)));
  }
  std::vector<sock_filter> code;
  code.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_CPU)));
  for (size_t i = 0; i < cpus_.size(); ++i) {
    code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(cpus_[i]), 0, 1));
    code.push_back(BPF_STMT(BPF_RET | BPF_K, static_cast<uint32_t>(i)));
  }
  code.push_back(BPF_STMT(BPF_RET | BPF_K, 0xffffffffu));
  sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) == 0) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("SO_ATTACH_REUSEPORT_CBPF: ", std::strerror(errno)));
}

}  // namespace kpx::uring
