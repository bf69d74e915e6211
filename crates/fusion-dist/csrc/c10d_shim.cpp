// A C interface to PyTorch's c10d Gloo process group (the engine of torch.distributed
// and DDP on CPU), compiled against the libtorch headers. Every function catches C++
// exceptions and returns them as a message the caller frees with fusion_c10d_free_error.
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

char* copy_message(const char* text) {
  size_t length = std::strlen(text);
  char* copy = static_cast<char*>(std::malloc(length + 1));
  if (copy != nullptr) {
    std::memcpy(copy, text, length + 1);
  }
  return copy;
}

template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

std::vector<at::Tensor> one(void* tensor) {
  return {*static_cast<at::Tensor*>(tensor)};
}

}  // namespace

extern "C" {

// Joins a group of `world` processes: rank 0 serves the rendezvous store on host:port,
// the others connect to it. Gloo picks its network interface as PyTorch does
// (GLOO_SOCKET_IFNAME, else the address the hostname resolves to).
// Rank 0 passes a socket already bound to the master address (listen_fd >= 0): the store
// serves on it instead of binding every interface. With a loopback master (listen_local),
// Gloo's pairs bind the loopback address too.
char* fusion_c10d_new(const char* host, int port, int rank, int world, long timeout_ms, int listen_fd,
                      int listen_local, void** out) {
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = rank == 0;
    if (listen_fd >= 0) {
      options.masterListenFd = listen_fd;
    }
    options.numWorkers = world;
    options.waitWorkers = true;
    options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    auto group_options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    if (listen_local) {
      // A group on this machine: Gloo's own connections stay on the loopback interface.
      group_options->devices = {c10d::ProcessGroupGloo::createDeviceForHostname(std::string(host))};
    }
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, group_options);
    *out = new Group{store, group};
  });
}

void fusion_c10d_drop(void* group) {
  delete static_cast<Group*>(group);
}

// Sums a dense tensor over every rank, in place.
char* fusion_c10d_all_reduce_sum(void* group, void* tensor) {
  return guarded([&] {
    auto tensors = one(tensor);
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    static_cast<Group*>(group)->group->allreduce(tensors, options)->wait();
  });
}

// Copies rank `root`'s tensor into every rank's, in place.
char* fusion_c10d_broadcast(void* group, void* tensor, int root) {
  return guarded([&] {
    auto tensors = one(tensor);
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    static_cast<Group*>(group)->group->broadcast(tensors, options)->wait();
  });
}

char* fusion_c10d_barrier(void* group) {
  return guarded([&] { static_cast<Group*>(group)->group->barrier()->wait(); });
}

void fusion_c10d_free_error(char* message) {
  std::free(message);
}

}  // extern "C"
