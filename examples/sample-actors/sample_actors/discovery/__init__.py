"""
Finding actors: addresses (`._addr`), the registry table the root
actor serves (`._registry`) and the client calls to query it (`._api`).

"""
